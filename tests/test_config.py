"""The typed configuration: defaults, file, environment, and a clear message for every mistake."""
import pytest

from webhook.config import DEFAULT, ConfigError, from_dict, load


def test_defaults_are_safe():
    assert DEFAULT.mode == "enforce"
    assert not DEFAULT.mutations.any_enabled()
    assert DEFAULT.dns.namespace == "kube-system" and DEFAULT.dns.podLabels == {"k8s-app": "kube-dns"}
    assert DEFAULT.isolation.labelKey == "netpol-guard.io/isolate"
    assert not DEFAULT.isolation.gatePods and not DEFAULT.cluster.ipBlockMatchesPods


def test_file_values_are_read(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("mode: warn\nrules: {missing-description: error}\nmutations: {addDnsEgress: true}\n")
    cfg = load(str(f), env={})
    assert cfg.mode == "warn" and cfg.rules == {"missing-description": "error"}
    assert cfg.mutations.addDnsEgress and cfg.mutations.any_enabled()


def test_every_problem_is_listed_with_its_key():
    with pytest.raises(ConfigError) as exc:
        from_dict({"mode": "audit", "rules": {"dns-egres-missing": "error", "missing-description": "loud"},
                   "dns": {"nodeLocalAddresses": ["not-an-ip"]}, "isolation": {"onLabelRemoved": "orphan"}})
    text = str(exc.value)
    for expected in ("mode:", "rules.dns-egres-missing: no such rule", "rules.missing-description: severity",
                     "dns.nodeLocalAddresses[0]", "isolation.onLabelRemoved"):
        assert expected in text


def test_unknown_and_misspelt_keys_are_errors_not_ignored():
    with pytest.raises(ConfigError, match=r"isolation.gatepods: unknown key"):
        from_dict({"isolation": {"gatepods": True}})
    with pytest.raises(ConfigError, match="must be true or false"):
        from_dict({"isolation": {"gatePods": "yes"}})


def test_environment_overrides_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("mode: enforce\n")
    cfg = load(str(f), env={"NETPOL_GUARD_MODE": "warn", "NETPOL_GUARD_ISOLATION_GATEPODS": "true",
                            "NETPOL_GUARD_EXEMPTNAMESPACES": "a, b"})
    assert cfg.mode == "warn" and cfg.isolation.gatePods and cfg.exemptNamespaces == ("a", "b")


def test_config_file_named_by_environment(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("mode: warn\n")
    assert load(env={"NETPOL_GUARD_CONFIG": str(f)}).mode == "warn"


def test_unknown_environment_setting_is_an_error():
    with pytest.raises(ConfigError, match="NETPOL_GUARD_MOED: unknown setting"):
        load(env={"NETPOL_GUARD_MOED": "warn"})


def test_unreadable_or_invalid_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load(str(tmp_path / "missing.yaml"), env={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line \d"):
        load(str(bad), env={})


def test_leader_election_timings_must_let_a_leader_stop_before_its_lease_expires():
    with pytest.raises(ConfigError, match="leaderElection"):
        from_dict({"leaderElection": {"leaseDurationSeconds": 5, "renewDeadlineSeconds": 10}})


def test_certificate_renewal_window_must_be_shorter_than_validity():
    with pytest.raises(ConfigError, match="renewBeforeDays"):
        from_dict({"certificates": {"validityDays": 30, "renewBeforeDays": 30}})
