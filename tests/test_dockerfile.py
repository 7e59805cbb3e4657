"""The Dockerfile, read the way docker reads it (no engine runs on our build machines)."""
from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "cc ", "clang", "python3-dev", "libc6-dev")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [a for i, a in self.instructions if i == instruction]


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions grouped by stage; joins backslash continuations, drops comments."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, "Dockerfile ends inside a continued line"

    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = rest.strip()
        if instruction == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        assert instruction in {"RUN", "COPY", "ENV", "WORKDIR", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "ARG",
                               "LABEL", "ADD", "HEALTHCHECK", "STOPSIGNAL", "VOLUME", "SHELL", "ONBUILD"}, line
        assert stages, f"{instruction} before the first FROM"
        stages[-1].instructions.append((instruction, rest))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_multi_stage_on_an_exactly_pinned_slim_python(stages):
    assert len(stages) == 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", stage.base), stage.base
    assert stages[0].base == stages[1].base  # build and run on the same Python
    assert stages[0].name and stages[1].name is None


def test_wheels_are_built_in_the_first_stage_and_installed_from_them_in_the_final_stage(stages):
    build, final = stages
    assert any(re.search(r"\bpip wheel\b.*--wheel-dir[= ]/wheels", run) for run in build.args("RUN"))
    installs = [run for run in final.args("RUN") if re.search(r"\bpip install\b", run)]
    assert len(installs) == 1
    install = installs[0]
    assert "--no-index" in install, "the final stage must not reach a package index"
    assert re.search(r"--find-links[= ]/wheels", install)
    assert f"from={build.name}" in install or any(f"--from={build.name}" in c for c in final.args("COPY"))
    # Nothing but the wheels comes from the build context into the final image.
    assert final.args("COPY") == [] and final.args("ADD") == []


def test_final_stage_installs_the_version_pyproject_declares(stages):
    install = next(run for run in stages[1].args("RUN") if "pip install" in run)
    pins = re.findall(r"\b([A-Za-z0-9_.-]+)==([0-9][^\s]*)", install)
    assert pins == [(project()["name"], project()["version"])]


def test_final_stage_runs_as_a_numeric_non_root_user(stages):
    users = stages[1].args("USER")
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert int(uid) == 65532  # the chart's runAsUser
    # USER is the last word on privileges: no RUN after it could need root and fail silently.
    last_user = max(i for i, (ins, _) in enumerate(stages[1].instructions) if ins == "USER")
    assert all(ins != "RUN" for ins, _ in stages[1].instructions[last_user:])


def test_no_build_tools_in_the_final_stage(stages):
    for run in stages[1].args("RUN"):
        for tool in BUILD_TOOLS:
            assert tool not in run + " ", f"final stage mentions {tool.strip()}: {run}"
        assert "apt-get install" not in run


def test_entrypoint_and_cmd(stages):
    final = stages[1]
    assert json.loads(final.args("ENTRYPOINT")[-1]) == ["netpol-guard"]
    assert json.loads(final.args("CMD")[-1]) == ["serve"]
    assert "8443" in final.args("EXPOSE")[-1].split()
    assert project()["scripts"]["netpol-guard"] == "webhook.cli:main"


def test_build_stage_copies_what_the_wheel_is_built_from(stages):
    copied = []
    for args in stages[0].args("COPY"):
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        copied += words[:-1]
    # The wheel needs the package and the readme pyproject.toml declares.
    assert {"pyproject.toml", "webhook", project()["readme"]} <= set(copied)
    # and the license files it declares (setuptools refuses to build without them)
    assert set(project().get("license-files", [])) <= set(copied)
    for source in copied:
        if source != project()["readme"]:  # README.md is written by the docs work; its presence is checked at build
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_dockerignore_lets_through_exactly_what_is_copied(stages):
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def included(path: str) -> bool:
        result = True
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern[1:] if negate else pattern
            if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.rstrip("/")) or \
                    path.startswith(pat.rstrip("/") + "/") and pat.endswith("/"):
                result = negate
        return result

    assert included("pyproject.toml") and included("webhook") and included("README.md")
    assert not included(".venv") and not included(".git") and not included("tests") and not included("certs")
