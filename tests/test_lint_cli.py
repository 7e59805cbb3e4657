"""`netpol-guard lint` as a user runs it: formats, exit codes, and every kind of bad input."""
import json
import subprocess
import sys
import textwrap

import pytest

GOOD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api
  namespace: shop
  annotations: {description: "frontend may call api on 8080"}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080}]
"""

BAD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api-egress
  namespace: shop
  annotations: {description: "api may call the database"}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 5432}]
"""

CLUSTER = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: api, ports: [{containerPort: 8080}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: shop}
spec:
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: db, ports: [{containerPort: 5432}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend-1, namespace: shop, labels: {app: frontend}}
spec: {containers: [{name: web, image: web}]}
"""


def lint(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "webhook", "lint", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "policies").mkdir()
    return tmp_path


def test_clean_policies_exit_zero_and_say_what_was_read(repo):
    (repo / "policies" / "api.yaml").write_text(GOOD)
    r = lint("--cluster", repo / "cluster.yaml", repo / "policies")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checked 1 NetworkPolicy: 0 errors" in r.stdout
    assert "2 Deployment" in r.stdout and "1 Namespace" in r.stdout and "1 Pod" in r.stdout


def test_an_error_exits_one_with_compiler_style_location_and_a_fix(repo):
    f = repo / "policies" / "api-egress.yaml"
    f.write_text(BAD)
    r = lint("--cluster", repo / "cluster.yaml", f)
    assert r.returncode == 1
    line = next(l for l in r.stdout.splitlines() if "[dns-egress-missing]" in l)
    assert line.startswith(f"{f}:") and ": error [dns-egress-missing] shop/api-egress spec.egress" in line
    assert "    fix:" in r.stdout and "protocol: UDP" in r.stdout


def test_json_output_has_the_fixed_shape(repo):
    f = repo / "policies" / "api-egress.yaml"
    f.write_text(BAD)
    r = lint("--format", "json", "--cluster", repo / "cluster.yaml", f)
    assert r.returncode == 1
    out = json.loads(r.stdout)
    finding = next(x for x in out["findings"] if x["rule"] == "dns-egress-missing")
    assert {"rule", "category", "severity", "policy", "file", "path", "message", "fix"} <= set(finding)
    assert finding["category"] == "dns" and finding["severity"] == "error"
    assert finding["policy"] == "shop/api-egress" and finding["file"] == str(f)
    assert out["summary"]["policies"] == 1 and out["summary"]["errors"] >= 1


def test_directories_multi_documents_lists_and_json_are_all_read(repo):
    d = repo / "policies" / "nested" / "deeper"
    d.mkdir(parents=True)
    (d / "a.yaml").write_text(GOOD + "---\n" + GOOD.replace("name: api\n", "name: api-2\n"))
    items = [json.loads(json.dumps(__import__("yaml").safe_load(GOOD)))]
    items[0]["metadata"]["name"] = "api-3"
    (repo / "policies" / "list.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    (repo / "policies" / "README.txt").write_text("not a manifest, and not read from a directory")
    r = lint("--format", "json", "--cluster", repo / "cluster.yaml", repo / "policies")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["summary"]["policies"] == 3


def test_objects_without_namespace_default_to_default_like_kubectl(repo):
    (repo / "policies" / "p.yaml").write_text(GOOD.replace("  namespace: shop\n", ""))
    out = json.loads(lint("--format", "json", repo / "policies").stdout)
    assert {f["policy"] for f in out["findings"]} <= {"default/api"}


def test_without_inventory_selector_checks_stay_quiet_and_say_so(repo):
    (repo / "policies" / "p.yaml").write_text(GOOD.replace("app: frontend", "app: nobody"))
    r = lint(repo / "policies")
    assert r.returncode == 0
    assert "pod-selector-matches-nothing" not in r.stdout
    assert "no Pods or workloads in view" in r.stdout and "no Namespace objects in view" in r.stdout


@pytest.mark.parametrize("content,expected", [
    ("kind: NetworkPolicy\nmetadata: {name: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "not a Kubernetes object"),
    ("apiVersion: v1\nmetadata: {name: x}\n", "object has no kind"),
    ("kind: NetworkPolicy\nmetadata: {name: x}\n", "NetworkPolicy has no apiVersion"),
    ("\tkey: value\n", "not valid YAML"),
])
def test_unusable_input_exits_two_naming_file_and_line(tmp_path, content, expected):
    f = tmp_path / "broken.yaml"
    f.write_text(content)
    r = lint(f)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert f"{f}:" in r.stderr and expected in r.stderr


def test_binary_and_missing_files_exit_two(tmp_path):
    b = tmp_path / "x.yaml"
    b.write_bytes(b"\x00\x01\x02")
    r = lint(b)
    assert r.returncode == 2 and "binary file" in r.stderr
    r = lint(tmp_path / "nope.yaml")
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_malformed_network_policy_is_a_finding_with_the_api_servers_field_path(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(textwrap.dedent("""\
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: p, namespace: shop}
        spec:
          podSelector: {}
          ingress:
          - ports:
            - port: 70000
              protocol: tcp
        """))
    r = lint(f)
    assert r.returncode == 1
    assert f"{f}:8: error [invalid-spec] shop/p spec.ingress[0].ports[0].port" in r.stdout
    assert f"{f}:9: error [invalid-spec] shop/p spec.ingress[0].ports[0].protocol" in r.stdout


def test_bad_config_and_no_paths_are_usage_errors(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mode: loud\n")
    (tmp_path / "p.yaml").write_text(GOOD)
    r = lint("--config", cfg, tmp_path / "p.yaml")
    assert r.returncode == 2 and "mode" in r.stderr
    r = lint()
    assert r.returncode == 2 and "no PATH" in r.stderr


def test_configured_severity_and_skip_annotations_change_the_outcome(repo):
    f = repo / "policies" / "p.yaml"
    f.write_text(BAD)
    cfg = repo / "c.yaml"
    cfg.write_text("rules: {dns-egress-missing: warning}\n")
    assert lint("--config", cfg, "--cluster", repo / "cluster.yaml", f).returncode == 0
    f.write_text(BAD.replace('annotations: {description: "api may call the database"}',
                             'annotations: {description: "x", netpol-guard.io/skip-rules: "dns-egress-missing"}'))
    r = lint("--cluster", repo / "cluster.yaml", f)
    assert r.returncode == 0 and "[skip-without-reason]" in r.stdout


def test_explain_prints_the_rule_with_examples():
    r = subprocess.run([sys.executable, "-m", "webhook", "lint", "--explain", "peers-or-confusion"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Bad:" in r.stdout and "Good:" in r.stdout
    r = subprocess.run([sys.executable, "-m", "webhook", "lint", "--explain", "no-such-rule"],
                       capture_output=True, text=True)
    assert r.returncode == 2


def test_every_command_prints_help():
    from webhook.cli import COMMAND_MODULES
    for name in COMMAND_MODULES:
        r = subprocess.run([sys.executable, "-m", "webhook", name, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: netpol-guard" in r.stdout, name
