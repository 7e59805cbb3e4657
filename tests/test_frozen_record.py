"""frozen_record: the parsed models keep exactly the semantics of @dataclass(frozen=True)."""
import dataclasses
import inspect
import pickle

import pytest

from webhook.admission.review import AdmissionRequest, GroupVersionKind, UserInfo
from webhook.policy.errors import frozen_record
from webhook.policy.model import NetworkPolicy, Peer, PortSpec, Rule
from webhook.policy.parse import ParseResult
from webhook.policy.selectors import LabelSelector

RECORDS = [AdmissionRequest, GroupVersionKind, UserInfo, NetworkPolicy, Peer, PortSpec, Rule, ParseResult,
           LabelSelector]


def _reference(cls):
    """The same class as a plain frozen dataclass, to compare signatures and behaviour with."""
    return dataclasses.make_dataclass(
        cls.__name__, [(f.name, f.type, f) for f in dataclasses.fields(cls)], frozen=True,
        eq=cls.__dataclass_params__.eq)


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_same_parameters_as_a_frozen_dataclass(cls):
    def parameters(c):
        return [(p.name, p.kind, repr(p.default)) for p in inspect.signature(c).parameters.values()]
    assert parameters(cls) == parameters(_reference(cls))


@frozen_record
class _Sample:
    name: str
    items: tuple = ()
    extra: dict = dataclasses.field(default_factory=dict)


def test_behaves_like_a_frozen_dataclass():
    a = _Sample("a")
    assert (a.name, a.items, a.extra) == ("a", (), {})
    assert _Sample("a").extra is not a.extra  # a fresh default per instance
    assert a == _Sample("a", ())
    assert a != _Sample("a", (1,))
    assert repr(_Sample("a", (1,), {"k": 1})) == "_Sample(name='a', items=(1,), extra={'k': 1})"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.name = "b"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del a.name
    assert dataclasses.replace(a, name="b") == _Sample("b")
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(TypeError):
        _Sample()
    with pytest.raises(TypeError):
        _Sample("a", (), {}, 4)


def test_hash_and_eq_follow_the_fields():
    h = LabelSelector((("app", "web"),))
    assert h == LabelSelector((("app", "web"),)) and hash(h) == hash(LabelSelector((("app", "web"),)))
    assert {PortSpec(0, "TCP", 80), PortSpec(0, "TCP", 80), PortSpec(1, "TCP", 80)} == {
        PortSpec(0, "TCP", 80), PortSpec(1, "TCP", 80)}
    assert GroupVersionKind("networking.k8s.io", "v1", "NetworkPolicy") == GroupVersionKind(
        "networking.k8s.io", "v1", "NetworkPolicy")


def test_unsupported_fields_are_refused():
    with pytest.raises(TypeError):
        @frozen_record
        class _Late:
            a: int
            b: int = dataclasses.field(default=0, init=False)
    with pytest.raises(TypeError):
        @frozen_record
        class _Post:
            a: int

            def __post_init__(self):
                pass
