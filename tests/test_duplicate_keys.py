"""A key written twice in one mapping is unusable input everywhere a file is read -
manifests (YAML and JSON), cluster snapshots, --config, maps: exit 2 naming the file, the
line and the key. YAML and JSON parsers keep the last value without a word, so a mistake in
the first one was never checked (lint said 0 errors); kubectl refuses such files."""
from __future__ import annotations

from pathlib import Path

import pytest

from webhook.cli import main

REPO = Path(__file__).resolve().parent.parent
TWO_INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop, annotations: {description: x}}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {name: monitoring}}}]
  ingress:
  - from: [{podSelector: {}}]
"""
TWO_INGRESS_JSON = """{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
 "metadata": {"name": "api-ingress", "namespace": "shop"},
 "spec": {"podSelector": {},
          "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]}],
          "ingress": [{"from": [{"podSelector": {}}]}]}}
"""
POD_WITH_TWO_LABELS = """{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "shop",
  "labels": {"app": "api", "app": "web"}}, "spec": {"containers": []}}]}
"""


def lint(capsys, *args) -> tuple[int, str]:
    rc = main(["lint", *map(str, args)])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("name, text, where", [
    ("p.yaml", TWO_INGRESS, "p.yaml:9: spec.ingress: duplicate key 'ingress'"),
    ("p.json", TWO_INGRESS_JSON, "p.json:5: spec.ingress: duplicate key 'ingress'"),
])
def test_a_duplicate_key_in_a_manifest_is_exit_2_with_line_and_key(tmp_path, capsys, name, text, where):
    (tmp_path / name).write_text(text)
    rc, err = lint(capsys, tmp_path / name)
    assert rc == 2 and where in err, err


def test_a_duplicate_key_in_a_json_snapshot_is_exit_2_with_line_and_key(tmp_path, capsys):
    (tmp_path / "pods.json").write_text(POD_WITH_TWO_LABELS)
    rc, err = lint(capsys, "--cluster", tmp_path / "pods.json", REPO / "examples" / "policies" / "good")
    assert rc == 2 and "pods.json:3: items[0].metadata.labels.app: duplicate key 'app'" in err, err


def test_a_duplicate_key_beside_a_merge_key_is_found_too(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(TWO_INGRESS.replace("metadata: {", "metadata: {<<: {labels: {}}, "))
    rc, err = lint(capsys, tmp_path / "p.yaml")
    assert rc == 2 and "p.yaml:9: spec.ingress: duplicate key 'ingress'" in err, err


def test_a_merge_key_overridden_by_a_written_key_is_no_duplicate(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {<<: {name: x, namespace: shop}, name: p, annotations: {description: x}}\n"
        "spec: {podSelector: {}, policyTypes: [Ingress]}\n")
    rc, err = lint(capsys, tmp_path / "p.yaml")
    assert rc == 0, err


@pytest.mark.parametrize("command", [["lint"], ["simulate", "--cluster", str(REPO / "examples" / "cluster")]])
def test_a_duplicate_key_in_the_config_is_exit_2_with_line_and_key(tmp_path, capsys, command):
    (tmp_path / "c.yaml").write_text('rules:\n  dns-egress-missing: "off"\nmode: warn\nrules:\n  dns-tcp-missing: "off"\n')
    args = [*command, "--config", str(tmp_path / "c.yaml")] + (
        [str(REPO / "examples" / "policies" / "good")] if command == ["lint"] else [])
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "c.yaml" in err and "line 4: rules: duplicate key 'rules'" in err, err


def test_a_duplicate_key_in_a_map_is_still_reported_with_its_path(tmp_path, capsys):
    (tmp_path / "map.yaml").write_text("namespaces: [shop]\nworkloads: []\nworkloads: []\n")
    assert main(["generate", "--map", str(tmp_path / "map.yaml")]) == 2
    assert "map.yaml:3: workloads: duplicate key 'workloads'" in capsys.readouterr().err


def test_the_path_of_a_duplicate_is_one_line_whatever_the_keys_above_it_hold(tmp_path, capsys):
    # The path is made of the file's own keys: one holding a newline must not put a line of
    # its own (a forged `::error` annotation in CI) into the error.
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata:\n'
                       '  "a\\n::error::forged":\n    b: 1\n    b: 2\n')
    rc, err = lint(capsys, "--cluster", cluster, REPO / "examples" / "policies" / "good")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "data.a\\n::error::forged.b: duplicate key 'b'" in err
