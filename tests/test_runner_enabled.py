"""Registry.enabled: the checks the runner calls under one configuration, computed once per config."""
from webhook.config import DEFAULT, Config
from webhook.rules.base import REGISTRY, Registry, Rule


def test_enabled_leaves_out_builtin_and_off_rules_and_carries_the_configured_severity():
    some = [r for r in REGISTRY if not r.builtin][:2]
    config = Config(rules={some[0].id: "off", some[1].id: "info"})
    enabled = dict((r.id, sev) for r, sev in REGISTRY.enabled(config))
    assert some[0].id not in enabled
    assert enabled[some[1].id] == "info"
    assert not any(r.builtin for r, _ in REGISTRY.enabled(config))
    plain = [r for r in REGISTRY if not r.builtin and r.id != some[0].id and not r.default_off]
    assert [r for r, _ in REGISTRY.enabled(config)] == plain
    assert all(sev is None for _, sev in REGISTRY.enabled(DEFAULT))


def test_a_rule_off_by_default_runs_only_when_the_configuration_names_it():
    [off] = [r for r in REGISTRY if r.default_off]
    assert off.id not in {r.id for r, _ in REGISTRY.enabled(DEFAULT)}
    assert dict((r.id, sev) for r, sev in REGISTRY.enabled(Config(rules={off.id: "warning"})))[off.id] == "warning"


def test_enabled_follows_rules_registered_later():
    reg = Registry()
    mk = lambda rid: Rule(id=rid, category="dns", severity="error", summary="", rationale="", check=lambda p, c: ())
    reg.add(mk("a-rule"))
    assert [r.id for r, _ in reg.enabled(DEFAULT)] == ["a-rule"]
    reg.add(mk("b-rule"))
    assert [r.id for r, _ in reg.enabled(DEFAULT)] == ["a-rule", "b-rule"]
