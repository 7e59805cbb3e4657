"""Field paths and field errors, formatted the way the API server reports them; and
``frozen_record``, the frozen dataclass the parsed models are made of."""
from __future__ import annotations

from dataclasses import MISSING, dataclass, fields


class Path:
    """An immutable field path such as ``spec.ingress[0].from[1].ipBlock.cidr``.

    A plain slotted class rather than a frozen dataclass: the parser makes ~17 of these
    per policy on the admission path, and a frozen dataclass's __init__ costs twice as much.
    """

    __slots__ = ("text",)

    def __init__(self, text: str = "") -> None:
        self.text = text

    def child(self, name: str) -> "Path":
        return Path(f"{self.text}.{name}" if self.text else name)

    def index(self, i: int) -> "Path":
        return Path(f"{self.text}[{i}]")

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Path({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Path) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


ROOT = Path()
SPEC = Path("spec")


@dataclass(frozen=True)
class FieldError:
    """One reason the API server would refuse the object.

    kind is the API server's wording: "Required value", "Invalid value",
    "Unsupported value", "Forbidden", "Unknown field", "Too many".
    """

    path: Path
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"


class _Factory:
    """A parameter default meaning "call the field's default_factory", as in dataclasses."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def frozen_record(cls=None, /, **options):
    """``@dataclass(frozen=True, **options)`` with a cheaper ``__init__``.

    A frozen dataclass's own ``__init__`` stores each field through ``object.__setattr__`` to get
    past its no-assignment guard, which costs about twice a plain ``__init__``; the parsers build
    ~10 such objects per admission review. This ``__init__`` (same parameters, defaults and
    factories) writes the instance ``__dict__`` instead, which the guard does not watch.
    Everything else - eq, hash, repr, FrozenInstanceError on assignment, fields(), replace() -
    is the dataclass's own. Only plain fields are supported: no __post_init__, init=False or kw_only.
    """
    def wrap(cls):
        cls = dataclass(frozen=True, **options)(cls)
        cls.__init__ = _dict_init(cls)
        return cls
    return wrap if cls is None else wrap(cls)


def _dict_init(cls):
    if hasattr(cls, "__post_init__") or "__slots__" in cls.__dict__:
        raise TypeError(f"frozen_record {cls.__name__}: __post_init__ and slots are not supported")
    namespace: dict = {"_FACTORY": _FACTORY}
    params, body = [], []
    for f in fields(cls):
        if not f.init or f.kw_only:
            raise TypeError(f"frozen_record {cls.__name__}.{f.name}: init=False and kw_only are not supported")
        if f.default is not MISSING:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not MISSING:
            namespace[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_FACTORY")
            body.append(f"    if {f.name} is _FACTORY:\n        {f.name} = _factory_{f.name}()")
        else:
            params.append(f.name)
        body.append(f"    _state[{f.name!r}] = {f.name}")
    source = f"def __init__(self, {', '.join(params)}):\n    _state = self.__dict__\n" + "\n".join(body)
    exec(source, namespace)  # noqa: S102 - generated from the class's own field names, as dataclasses does
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    return init
