"""Directories of manifests hold other YAML too (a Helm Chart.yaml and values files, a
kustomization.yaml, communication maps): walking a directory, lint, simulate and serve skip
files that hold no Kubernetes object, naming each on stderr; --strict, a file named on the
command line, broken YAML and a stray document among objects stay unusable input (exit 2)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.server_fixture import serve  # noqa: F401 (fixture)
from tests.test_ci_formats import sarif_schema  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parent.parent
OTHER_YAML = {
    "Chart.yaml": "apiVersion: v2\nname: x\nversion: 1.0.0\n",
    "values.yaml": "replicaCount: 2\nkind: Deployment   # a chart's choice of workload, not an object\n",
    "kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                          "resources: [monitoring-ingress.yaml]\n",
    "dashboard.json": '{"title": "NetworkPolicies", "panels": []}\n',
}


def cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "webhook", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.fixture
def chart_dir(tmp_path):
    """The issue's reproduction: good policies, a Chart.yaml beside them, and more other YAML."""
    d = tmp_path / "x"
    d.mkdir()
    for f in (REPO / "examples" / "policies" / "good").glob("*.yaml"):
        shutil.copy(f, d)
    for name, text in OTHER_YAML.items():
        (d / name).write_text(text)
    (d / "maps").mkdir()
    shutil.copy(REPO / "examples" / "maps" / "three-tier.yaml", d / "maps" / "three-tier.yaml")
    return d


def skipped_files(stderr: str) -> list[str]:
    return sorted(Path(line.split(": ", 2)[1]).name for line in stderr.splitlines()
                  if line.startswith("note: skipped "))


def test_lint_of_a_directory_skips_other_yaml_naming_each_file_and_why(chart_dir):
    r = cli("lint", "--cluster", "examples/cluster", chart_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert skipped_files(r.stderr) == ["Chart.yaml", "dashboard.json", "kustomization.yaml", "three-tier.yaml",
                                       "values.yaml"]
    notes = {Path(line.split(": ", 2)[1]).name: line for line in r.stderr.splitlines()}
    assert "(no kind)" in notes["Chart.yaml"] and "helm template" in notes["Chart.yaml"]
    assert "Kustomization of kustomize.config.k8s.io/v1beta1" in notes["kustomization.yaml"]
    assert "kubectl kustomize" in notes["kustomization.yaml"]
    assert "(no apiVersion or kind)" in notes["three-tier.yaml"]
    assert "checked 4 NetworkPolicies" in r.stdout
    assert "skipped 5 files that hold no Kubernetes object (named on stderr)" in r.stdout


@pytest.mark.parametrize("fmt", ["json", "sarif", "junit", "github"])
def test_machine_readable_formats_keep_the_notes_on_stderr(chart_dir, fmt, sarif_schema):
    r = cli("lint", "--cluster", "examples/cluster", "--format", fmt, chart_dir)
    assert r.returncode == 0, r.stderr
    assert len(skipped_files(r.stderr)) == 5 and "note:" not in r.stdout
    if fmt == "json":
        assert json.loads(r.stdout)["summary"]["files"] == 4 + 6  # the policies and examples/cluster
    elif fmt == "sarif":
        jsonschema.Draft4Validator(sarif_schema).validate(json.loads(r.stdout))


def test_strict_makes_other_yaml_in_a_directory_an_error(chart_dir):
    r = cli("lint", "--strict", chart_dir)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{chart_dir / 'Chart.yaml'}:1: not a Kubernetes object (no kind)" in r.stderr
    assert "--strict" in r.stderr


def test_a_file_named_on_the_command_line_is_still_an_error(chart_dir):
    r = cli("lint", chart_dir / "Chart.yaml")
    assert r.returncode == 2 and "not a Kubernetes object (no kind)" in r.stderr
    assert "named on the command line" in r.stderr
    r = cli("lint", chart_dir, chart_dir / "values.yaml")  # in the directory AND named
    assert r.returncode == 2 and f"{chart_dir / 'values.yaml'}:1:" in r.stderr


def test_broken_yaml_in_a_directory_is_never_skipped(chart_dir):
    (chart_dir / "broken.yaml").write_text("apiVersion: v1\nkind: [Namespace\n")
    r = cli("lint", chart_dir)
    assert r.returncode == 2 and "broken.yaml:3: not valid YAML" in r.stderr


@pytest.mark.parametrize("stray", ["name: x\nversion: 1\n", "- a\n- list\n"])
def test_other_yaml_inside_a_file_of_objects_is_an_error(chart_dir, stray):
    (chart_dir / "mixed.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n" + stray)
    r = cli("lint", chart_dir)
    assert r.returncode == 2 and "mixed.yaml:5: not a Kubernetes object" in r.stderr
    assert "in a file of Kubernetes objects" in r.stderr


def test_broken_manifests_are_not_taken_for_other_yaml(chart_dir):
    """metadata plus one of apiVersion/kind: a manifest with a mistake, so an error, not a skip."""
    (chart_dir / "typo.yaml").write_text("apiVersion: networking.k8s.io/v1\nmetadata: {name: p}\nspec: {}\n")
    r = cli("lint", chart_dir)
    assert r.returncode == 2 and "typo.yaml:1: object has no kind" in r.stderr


def test_a_directory_of_only_other_yaml_says_so_in_the_empty_error(chart_dir):
    for f in chart_dir.glob("*.yaml"):
        if f.name not in OTHER_YAML:
            f.unlink()
    r = cli("lint", chart_dir)
    assert r.returncode == 2 and "no NetworkPolicy found" in r.stderr
    assert "(5 manifest files, 5 of them skipped as not Kubernetes objects)" in r.stderr


def test_cluster_directories_skip_other_yaml_in_lint_and_simulate(tmp_path):
    snap = tmp_path / "snapshot"
    shutil.copytree(REPO / "examples" / "cluster", snap)
    (snap / "Chart.yaml").write_text(OTHER_YAML["Chart.yaml"])
    r = cli("lint", "--cluster", snap, "examples/policies/good")
    assert r.returncode == 0 and skipped_files(r.stderr) == ["Chart.yaml"], r.stderr
    r = cli("simulate", "--cluster", snap, "--from", "shop/frontend", "--to", "shop/api", "--port", "8080",
            "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["allowed"] is True, r.stderr
    assert skipped_files(r.stderr) == ["Chart.yaml"]
    r = cli("simulate", "--strict", "--cluster", snap, "--from", "shop/frontend", "--to", "shop/api")
    assert r.returncode == 2 and "Chart.yaml:1: not a Kubernetes object" in r.stderr


def test_large_inputs_parsed_in_parallel_skip_and_refuse_the_same_way(tmp_path):
    """Past 4 MiB the files are parsed in other processes: the skip, and an error, cross back."""
    d = tmp_path / "big"
    d.mkdir()
    pods = [{"metadata": {"name": f"p{i}", "namespace": "shop", "labels": {"app": "api", "pad": "x" * 40}},
             "spec": {"containers": [{"name": "c", "image": "i"}]}} for i in range(25_000)]
    (d / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List",
                                             "items": [{"apiVersion": "v1", "kind": "Pod", **p} for p in pods]}))
    assert (d / "pods.json").stat().st_size > 4 * 1024 * 1024
    for f in ("monitoring-ingress.yaml", "shop-api-egress-payments.yaml"):
        shutil.copy(REPO / "examples" / "policies" / "good" / f, d)
    (d / "Chart.yaml").write_text(OTHER_YAML["Chart.yaml"])
    r = cli("lint", "--format", "json", d)
    assert r.returncode in (0, 1) and skipped_files(r.stderr) == ["Chart.yaml"], r.stderr
    assert json.loads(r.stdout)["summary"]["objects"]["Pod"] == 25_000
    (d / "broken.yaml").write_text("kind: [\n")
    r = cli("lint", d)
    assert r.returncode == 2 and "broken.yaml:2: not valid YAML" in r.stderr and "Traceback" not in r.stderr


def test_serve_with_a_cluster_directory_skips_other_yaml_and_starts(tmp_path, serve):  # noqa: F811
    snap = tmp_path / "snapshot"
    shutil.copytree(REPO / "examples" / "cluster", snap)
    (snap / "kustomization.yaml").write_text(OTHER_YAML["kustomization.yaml"])
    server = serve(["--cluster", str(snap)])
    server.wait_ready()
    assert f"note: skipped {snap / 'kustomization.yaml'}: a Kustomization" in server.log_text()
    review = json.loads((REPO / "examples" / "admission" / "create-denied.json").read_text())
    status, body = server.post_json("/validate", review)
    assert status == 200 and body["response"]["allowed"] is False


def test_skipped_files_keep_nothing_of_their_text(tmp_path):
    # Each skipped file used to keep its parse alive until the end (the exception with its
    # traceback: the text and the YAML parser), so memory grew with every skipped file.
    import gc
    import tracemalloc
    from webhook.cluster.files import load_snapshot
    d = tmp_path / "repo"
    d.mkdir()
    shutil.copy(REPO / "examples" / "policies" / "good" / "monitoring-ingress.yaml", d)
    padding = "# " + "x" * 30_000 + "\n"
    for i in range(100):  # 3 MB: read in this process (below files.PARALLEL_MIN_BYTES)
        (d / f"values-{i}.yaml").write_text(padding + f"replicas: {i}\n")
    gc.collect()
    tracemalloc.start()
    try:
        snap = load_snapshot([str(d)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(snap.skipped) == 100 and len(snap.policy_docs) == 1
    assert peak < 3_000_000, f"{peak:,} bytes at the peak: more than the 100 skipped files of 30 KB together"
