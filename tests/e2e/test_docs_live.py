"""The docs' netpol-guard commands that read a live cluster (`audit`, `--kubeconfig`; also as the
kubectl plugin, `kubectl netpol-guard audit ...`, through the real kubectl) run as written against
the real API server, with only the workstation's names swapped for this cluster's: the kubeconfig
path, the context name (`staging` -> this kubeconfig's `e2e`), the example folder, and files a
command writes (`> NAME` goes to a temporary directory)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.test_docs_commands import REPO, _logical_lines, _strip_comment, needs_live_cluster, BLOCK, DOCS


def live_commands():
    for doc in DOCS:
        text = doc.read_text()
        for m in BLOCK.finditer(text):
            line = text[:m.start()].count("\n") + 1
            for raw in _logical_lines(m.group(2)):
                cmd = _strip_comment(raw[2:] if raw.startswith("$ ") else raw)
                plugin = cmd.startswith("kubectl netpol-guard ") and needs_live_cluster(cmd[len("kubectl "):])
                if plugin or (cmd.startswith("netpol-guard") and needs_live_cluster(cmd)):
                    yield pytest.param(cmd, id=f"{doc.relative_to(REPO)}:{line}:{cmd[:60]}")


@pytest.mark.parametrize("cmd", list(live_commands()))
def test_live_cluster_commands_in_the_docs_run_against_a_real_api_server(cmd, guarded_cluster, tmp_path):
    kubeconfig = str(guarded_cluster.kubeconfig)
    run = (cmd.replace("~/.kube/config", kubeconfig).replace("--context staging", "--context e2e")
           .replace(" policies/", " examples/policies/good/"))
    run = re.sub(r">\s*([\w.-]+)", lambda m: f"> {tmp_path}/{m.group(1)}", run)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETPOL_GUARD_")}
    env["KUBECONFIG"] = kubeconfig
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.path.dirname(guarded_cluster.cp.bin("kubectl")),
                                   env.get("PATH", "")])
    res = subprocess.run(["bash", "-c", run], cwd=str(REPO), env=env, capture_output=True, text=True, timeout=120)
    # exit 0/1 like lint (1: the example cluster has error findings); 2 or a traceback is a failure
    assert res.returncode in (0, 1), f"{run}\nexit {res.returncode}\n{res.stderr}{res.stdout}"
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stdout.strip() or any(tmp_path.iterdir()), f"{run} printed nothing"
