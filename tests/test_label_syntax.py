"""Label keys, values and names are checked as the API server checks them; strings found valid
are remembered (every review re-checks the same few), which must never change an answer."""
import pytest

from webhook.policy.selectors import dns_label_problem, label_key_problem, label_value_problem

CHECKS = [label_key_problem, label_value_problem, dns_label_problem]
INPUTS = ["app", "example.com/app", "App_1.x", "", "-bad", "bad-", "UPPER", "kube-system", "a" * 63, "a" * 64,
          "/name", "Example.com/app", "x/y/z", "ns-0042", "a.b", 7, None, True, ["app"], {"k": "v"}]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_answers_are_the_checks_own_on_every_ask(check):
    for _ in range(3):  # the first ask fills the memory, the later ones are answered from it
        for value in INPUTS:
            assert check(value) == check.__wrapped__(value), (check.__name__, value)


def test_examples_of_each_answer():
    assert label_key_problem("example.com/app") is None
    assert "prefix part" in label_key_problem("Example.com/app")
    assert label_value_problem("") is None
    assert "quote it in YAML" in label_value_problem(7)
    assert dns_label_problem("kube-system") is None
    assert "namespace name" in dns_label_problem("Kube-System")


def test_the_memory_is_bounded_and_starts_over():
    many = [f"key-{i}" for i in range(5000)]
    assert all(label_key_problem(k) is None for k in many)
    assert all(label_key_problem(k) is None for k in many)
    remembered = [c.cell_contents for c in label_key_problem.__closure__ if isinstance(c.cell_contents, set)]
    assert remembered and len(remembered[0]) <= 4096
    assert label_key_problem("key-!") is not None
