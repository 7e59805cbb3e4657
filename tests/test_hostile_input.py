"""Hostile files in every command that reads one: a clear message naming the file (and
line), exit 2, no traceback, bounded time and memory.

Each command runs as a real process under an address-space limit of 1 GiB and a time
limit (the "billion laughs" file used to take 4 GB and a minute before a MemoryError),
so a regression fails the test instead of taking the machine down with it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from webhook import safeload
from webhook.cli import main

REPO = Path(__file__).resolve().parent.parent
MEMORY_LIMIT = 1024 * 1024 * 1024
TIME_LIMIT = 60

# ~600 bytes that stand for 9^9 strings
LAUGHS = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\ndata:\n" + "  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"  {n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
SELF_ALIAS = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: &a [*a]\n"
SUPERSCRIPT_INT = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: !!int ²\n"
HUGE_INT_JSON = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": ' + "9" * 5000 + "}"
DEEP_JSON = ('{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": '
             + "[" * 100_000 + "]" * 100_000 + "}")
# what each hostile file must be reported as
CASES = {
    "laughs.yaml": (LAUGHS, "aliases expand this document"),
    "self-alias.yaml": (SELF_ALIAS, "refers to a node that contains it"),
    "superscript.yaml": (SUPERSCRIPT_INT, "cannot read '²' as int"),
    "huge-int.json": (HUGE_INT_JSON, "more than 4300 digits"),
    "deep.json": (DEEP_JSON, "nested too deeply"),
}


def run_limited(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`netpol-guard ARGS` in a child limited to MEMORY_LIMIT of address space."""
    code = ("import resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
            "from webhook.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_GUARD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIME_LIMIT, stdin=subprocess.DEVNULL)


def assert_refused(result: subprocess.CompletedProcess, file: str, phrase: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert file in result.stderr and phrase in result.stderr, result.stderr[-2000:]


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MANIFEST_COMMANDS = {
    "lint": lambda f: ["lint", f],
    "lint --cluster": lambda f: ["lint", "--cluster", f, str(REPO / "examples" / "policies")],
    "simulate": lambda f: ["simulate", "--cluster", f],
    "serve --cluster": lambda f: ["serve", "--dev", "--cluster", f, "--bind", f"127.0.0.1:{_free_port()}"],
}


@pytest.mark.parametrize("command", sorted(MANIFEST_COMMANDS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_manifest_is_exit_2_with_the_file_named(tmp_path, command, name):
    text, phrase = CASES[name]
    (tmp_path / name).write_text(text)
    assert_refused(run_limited(MANIFEST_COMMANDS[command](name), tmp_path), name, phrase)


YAML_CASES = ("laughs.yaml", "self-alias.yaml", "superscript.yaml")


@pytest.mark.parametrize("name", YAML_CASES)
def test_hostile_map_is_exit_2_with_the_file_named(tmp_path, name):
    text, phrase = CASES[name]
    (tmp_path / name).write_text(text)
    assert_refused(run_limited(["generate", "--map", name], tmp_path), name, phrase)


@pytest.mark.parametrize("name", YAML_CASES)
def test_hostile_config_is_exit_2_with_the_file_named(tmp_path, name):
    text, phrase = CASES[name]
    (tmp_path / name).write_text(text.replace("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "")
                                 .replace("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\n", ""))
    assert_refused(run_limited(["lint", "--config", name, str(REPO / "examples" / "policies")], tmp_path),
                   name, phrase)


@pytest.mark.parametrize("args", [["lint", "/dev/zero"], ["simulate", "--cluster", "/dev/zero"],
                                  ["generate", "--map", "/dev/zero"],
                                  ["lint", "--config", "/dev/zero", "examples/policies"]])
def test_an_endless_file_is_refused_after_a_bounded_read(args):
    assert_refused(run_limited(args, REPO), "/dev/zero", "binary file")


def test_a_huge_integer_in_a_networkpolicy_names_the_line(tmp_path):
    (tmp_path / "p.yaml").write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                                     "metadata: {name: p, namespace: shop}\nspec:\n  podSelector: {}\n"
                                     "  ingress:\n  - ports:\n    - port: " + "8" * 5000 + "\n")
    assert_refused(run_limited(["lint", "p.yaml"], tmp_path), "p.yaml:8:", "more than 4300 digits")



# Integers YAML 1.1 reads in other notations, each past 4,300 decimal digits only once
# converted (their text is shorter): PyYAML builds them, the first str() raised.
HUGE_INT_NOTATIONS = {
    "hex": "0x" + "f" * 3600,  # ~4,335 decimal digits
    "binary": "0b" + "1" * 14_300,  # ~4,305
    "octal": "0" + "7" * 4800,  # ~4,335
    "underscored-hex": "0x" + "f_" * 3599 + "f",
    "sexagesimal": "1" + ":59" * 2500,  # ~4,446
}
POLICY_WITH_PORT = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                    "metadata: {name: p, namespace: shop}\nspec:\n  podSelector: {}\n"
                    "  ingress:\n  - ports:\n    - port: PORT\n")


@pytest.mark.parametrize("notation", sorted(HUGE_INT_NOTATIONS))
def test_a_huge_integer_in_another_notation_is_refused_with_its_line(tmp_path, notation):
    (tmp_path / "p.yaml").write_text(POLICY_WITH_PORT.replace("PORT", HUGE_INT_NOTATIONS[notation]))
    assert_refused(run_limited(["lint", "p.yaml"], tmp_path), "p.yaml:8:", "more than 4300 digits")


@pytest.mark.parametrize("command", ["simulate", "serve --cluster"])
def test_a_huge_hex_integer_in_a_snapshot_is_refused(tmp_path, command):
    (tmp_path / "p.yaml").write_text(POLICY_WITH_PORT.replace("PORT", HUGE_INT_NOTATIONS["hex"]))
    assert_refused(run_limited(MANIFEST_COMMANDS[command]("p.yaml"), tmp_path), "p.yaml:8:", "more than 4300 digits")


def test_a_huge_hex_integer_in_a_map_or_config_is_refused(tmp_path):
    huge = HUGE_INT_NOTATIONS["hex"]
    (tmp_path / "map.yaml").write_text("namespaces: [shop]\nworkloads:\n- name: api\n  namespace: shop\n"
                                       "  labels: {app: api}\n  ports:\n  - {name: http, port: " + huge + "}\n")
    assert_refused(run_limited(["generate", "--map", "map.yaml"], tmp_path), "map.yaml:7", "more than 4300 digits")
    (tmp_path / "c.yaml").write_text("server:\n  maxRequestBytes: " + huge + "\n")
    assert_refused(run_limited(["lint", "--config", "c.yaml", str(REPO / "examples" / "policies")], tmp_path),
                   "c.yaml: line 2", "more than 4300 digits")


def test_integers_in_other_notations_below_the_limit_are_still_read():
    node, loader = next(safeload.yaml_nodes("a: 0x" + "f" * 3500 + "\nb: 0b101\nc: 0755\nd: 1:30\n"))
    value = safeload.construct(node, loader)
    assert value["a"] == int("f" * 3500, 16) and (value["b"], value["c"], value["d"]) == (5, 0o755, 90)


def test_a_long_key_over_a_long_list_takes_memory_in_proportion_to_the_file(tmp_path):
    # 1 MB of key over 2,000 list items: the line of every field was kept under its full
    # path, one copy of the key per item (2 GB: a MemoryError under the 1 GiB limit).
    (tmp_path / "p.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\n"
        "spec:\n  podSelector: {}\n  ? " + "k" * 1_000_000 + "\n  : [" + "0, " * 2000 + "0]\n")
    result = run_limited(["lint", "--format", "json", "p.yaml"], tmp_path)
    assert "Traceback" not in result.stderr and result.returncode in (0, 1), result.stderr[-2000:]
    findings = json.loads(result.stdout)["findings"]
    assert any(f["file"] == "p.yaml" and f["rule"] == "invalid-spec" for f in findings), findings

# --- size limits (lowered in-process: a test does not write a gigabyte) -------------------

def test_a_manifest_over_the_size_limit_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(safeload, "MAX_MANIFEST_BYTES", 4096)
    big = tmp_path / "big.yaml"
    big.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: '" + "x" * 5000 + "'}\n")
    assert main(["lint", str(big)]) == 2
    assert f"{big}: file is larger than the limit of 4,096 bytes" in capsys.readouterr().err


def test_a_map_over_the_size_limit_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(safeload, "MAX_MAP_BYTES", 4096)
    big = tmp_path / "map.yaml"
    big.write_text("namespaces: []\n# " + "x" * 5000 + "\n")
    assert main(["generate", "--map", str(big)]) == 2
    assert f"{big}: file is larger than the limit of 4,096 bytes" in capsys.readouterr().err


def test_a_config_over_the_size_limit_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(safeload, "MAX_CONFIG_BYTES", 4096)
    big = tmp_path / "config.yaml"
    big.write_text("mode: warn\n# " + "x" * 5000 + "\n")
    assert main(["lint", "--config", str(big), str(REPO / "examples" / "policies")]) == 2
    assert f"{big}: file is larger than the limit of 4,096 bytes" in capsys.readouterr().err


def test_files_at_the_limit_are_read(tmp_path, monkeypatch):
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
    (tmp_path / "ns.yaml").write_text(text)
    monkeypatch.setattr(safeload, "MAX_MANIFEST_BYTES", len(text))
    from webhook.cluster.files import read_file
    assert [d.kind for d in read_file(str(tmp_path / "ns.yaml"))] == ["Namespace"]


# --- what must keep working ------------------------------------------------------------

def test_aliases_that_stay_small_are_still_expanded(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: shop}\n"
        "spec:\n  podSelector: {matchLabels: &web {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: *web}}]\n"
        "    ports: [{port: 8080}]\n")
    assert main(["lint", "--format", "json", str(tmp_path / "p.yaml")]) in (0, 1)
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["policies"] == 1


def test_a_merge_key_in_a_config_still_works(tmp_path):
    from webhook.config import load
    (tmp_path / "c.yaml").write_text("mutations:\n  <<: {addDnsEgress: true}\n")
    assert load(str(tmp_path / "c.yaml"), env={}).mutations.addDnsEgress is True



def test_a_merge_key_does_not_turn_dates_elsewhere_in_the_document_into_dates(tmp_path, capsys):
    # Without the `<<` the label value is the string "2020-01-01" (as kubectl sends it); the
    # merge key sent the document through PyYAML's constructor, which made it a date.
    (tmp_path / "p.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: shop\n"
        "  labels: {<<: {team: x}, released: 2020-01-01}\n"
        "  annotations: {description: merged labels, built: 2020-01-01 10:00:00}\n"
        "spec: {podSelector: {matchLabels: {since: 2021-02-03}}, policyTypes: [Ingress]}\n")
    assert main(["lint", "--format", "json", str(tmp_path / "p.yaml")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert not [f for f in out["findings"] if f["rule"] == "invalid-spec"], out["findings"]
    node, loader = next(safeload.yaml_nodes((tmp_path / "p.yaml").read_text()))
    meta = safeload.construct(node, loader)["metadata"]
    assert meta["labels"] == {"team": "x", "released": "2020-01-01"}
    assert meta["annotations"]["built"] == "2020-01-01 10:00:00"

def test_the_documented_limits_are_the_ones_in_force():
    from webhook import bounded_text
    from webhook.admission import response
    doc = (REPO / "docs" / "operations.md").read_text()
    section = doc[doc.index("### Limits on input"):doc.index("### TLS and certificate rotation")]
    for text in ("1 GiB per manifest", "64 MiB per map", "4 MiB per configuration",
                 f"at most {safeload.MAX_ALIAS_NODES:,} nodes", f"{safeload.MAX_DEPTH} levels in YAML",
                 f"at most {safeload.MAX_INT_DIGITS:,} digits",
                 f"cut at {bounded_text.MESSAGE_MAX_CHARS:,} characters", f"fix at {bounded_text.FIX_MAX_CHARS:,}",
                 f"at {bounded_text.NAME_MAX_CHARS}", f"at most {response.DENIAL_MAX_ERRORS} errors"):
        assert text in section, text
    assert safeload.MAX_MANIFEST_BYTES == 1024 ** 3 and safeload.MAX_MAP_BYTES == 64 * 1024 ** 2
    assert safeload.MAX_CONFIG_BYTES == 4 * 1024 ** 2
    assert "4 MiB per kubeconfig" in section and safeload.MAX_KUBECONFIG_BYTES == 4 * 1024 ** 2


# Strings of Unicode digits: '²'.isdigit() is True but int('²') raises. Each place that reads a
# number out of a string a user wrote must treat them as what they are (not a number).
SUPERSCRIPT_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: s, namespace: default}
spec:
  selector: {app: a}
  ports: [{port: 80, targetPort: "²"}]
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, labels: {app: a}}
spec: {containers: [{name: c, image: x, ports: [{containerPort: 80}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: default, annotations: {description: api ingress}}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {}}]
    ports: [{port: 80}]
"""


def test_a_service_target_port_of_unicode_digits_is_a_name_not_a_crash(tmp_path):
    (tmp_path / "svc.yaml").write_text(SUPERSCRIPT_SERVICE)
    result = run_limited(["lint", str(tmp_path / "svc.yaml")], tmp_path)
    # before the fix the service-port-not-target-port rule died on int('²') (a traceback on
    # stderr, the rule silently skipped); now '²' is a port name that no container declares
    assert "Traceback" not in result.stderr and "failed on" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 0 and "checked 1 NetworkPolicy: 0 errors" in result.stdout, result.stdout


def test_a_networkpolicy_port_of_unicode_digits_is_judged_as_a_port_name(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: default}\n"
        "spec:\n  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - ports: [{port: \"²\"}]\n")
    assert main(["lint", str(tmp_path / "p.yaml")]) == 1
    out = capsys.readouterr().out
    # not "a quoted number is a port name; write port: ² unquoted", which would not parse either
    assert "spec.ingress[0].ports[0].port" in out and "a port name must contain only" in out, out
    assert "unquoted" not in out


def test_a_map_port_of_unicode_digits_is_a_problem_in_the_map(tmp_path):
    text = (REPO / "examples/maps/three-tier.yaml").read_text().replace("ports: [8080]", 'ports: ["²"]', 1)
    assert '"²"' in text
    (tmp_path / "map.yaml").write_text(text)
    result = run_limited(["generate", "--map", str(tmp_path / "map.yaml"), "--out", str(tmp_path / "out")], tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2 and "declares no port named '²'" in result.stderr, result.stderr


@pytest.mark.parametrize("args, phrase", [
    (["serve", "--dev", "--bind", "127.0.0.1:²"], "--bind '127.0.0.1:²': expected HOST:PORT"),
    (["simulate", "--cluster", "examples/cluster", "--from", "shop/frontend", "--to", "shop/api", "--port", "²"],
     "--port '²': not a port number"),
    (["simulate", "--cluster", "examples/cluster", "--from", "shop/frontend", "--to", "shop/api", "--port", "9" * 5000],
     "port must be between 1 and 65535"),
])
def test_command_line_numbers_of_unicode_digits_are_usage_errors(args, phrase):
    result = run_limited(args, REPO)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.returncode == 2 and phrase in result.stderr, result.stderr


def test_thousands_of_unknown_fields_are_counted_not_each_explained(tmp_path, capsys):
    # Each explained unknown field costs a "did you mean" search (~20 us): 60,000 of them in
    # one spec cost a review over a second. The first 20 are explained, the rest counted.
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "wide", "namespace": "default"},
              "spec": {"podSelector": {}, **{f"podSelectr{i}": 1 for i in range(30_000)}}}
    path = tmp_path / "wide.json"
    path.write_text(json.dumps(policy))
    code = main(["lint", "--format", "json", str(path)])
    out = json.loads(capsys.readouterr().out)
    messages = [f["message"] for f in out["findings"]]
    assert code == 1
    assert sum("has no field" in m for m in messages) == 20, len(messages)
    assert any("and 29,980 more unknown fields" in m for m in messages), messages[-3:]
