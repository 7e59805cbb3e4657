"""docs/install.md's image release instructions agree with the chart: the workflow is valid
for GitHub, and it builds and signs the image, for the platforms, that the chart's default
and its Artifact Hub annotation name."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DOC = (REPO / "docs" / "install.md").read_text()
CHART = yaml.safe_load((REPO / "charts" / "netpol-guard" / "Chart.yaml").read_text())
VALUES = yaml.safe_load((REPO / "charts" / "netpol-guard" / "values.yaml").read_text())
SECTION = DOC[DOC.index("### Publishing the image"):]
WORKFLOW_TEXT = re.search(r"^```yaml\n(.*?)^```", SECTION, re.S | re.M).group(1)
WORKFLOW = yaml.safe_load(WORKFLOW_TEXT)
SHELL = re.search(r"^```sh\n(.*?)^```", SECTION, re.S | re.M).group(1)


def test_release_workflow_is_a_valid_github_workflow(tmp_path):
    f = tmp_path / "release-image.yaml"
    f.write_text(WORKFLOW_TEXT)
    r = subprocess.run([str(Path(sys.executable).parent / "check-jsonschema"), "--builtin-schema",
                        "vendor.github-workflows", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_release_builds_signs_and_attests_the_image_the_chart_deploys():
    repo = VALUES["image"]["repository"]
    annotated = yaml.safe_load(CHART["annotations"]["artifacthub.io/images"])[0]
    steps = WORKFLOW["jobs"]["image"]["steps"]
    build = next(s for s in steps if s.get("id") == "build")["with"]
    assert build["tags"].startswith(f"{repo}:") and build["push"] is True
    assert build["sbom"] is True and build["provenance"]
    assert sorted(build["platforms"].split(",")) == sorted(annotated["platforms"])
    assert any("cosign sign" in s.get("run", "") and repo in s["run"] for s in steps)
    assert WORKFLOW["permissions"]["id-token"] == "write"
    assert f"IMAGE={repo}:$VERSION" in SHELL and "--platform linux/amd64,linux/arm64" in SHELL
    assert "--sbom=true" in SHELL and "cosign sign" in SHELL


def test_the_version_line_reads_the_charts_app_version(tmp_path):
    line = next(l for l in SHELL.splitlines() if l.startswith("VERSION="))
    r = subprocess.run(["bash", "-c", f"{line}; echo \"$VERSION\""], cwd=REPO, capture_output=True, text=True,
                       timeout=30)
    assert r.stdout.strip() == CHART["appVersion"]
    version_step = next(s for s in WORKFLOW["jobs"]["image"]["steps"] if s.get("id") == "version")["run"]
    out = tmp_path / "github_output"
    subprocess.run(["bash", "-c", version_step], check=True, timeout=30,
                   env={"GITHUB_REF_NAME": f"v{CHART['appVersion']}", "GITHUB_OUTPUT": str(out), "PATH": "/usr/bin:/bin"})
    assert out.read_text().strip() == f"version={CHART['appVersion']}"
