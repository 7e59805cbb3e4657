"""The pod agent (isolation controller, certificate manager) is a child of the gunicorn
master. If it dies - a crash, the OOM killer - the master starts a new one, so isolation
keeps being reconciled while the webhook keeps answering. The real `netpol-guard serve
--controller` against the Kubernetes API stand-in; the agent is killed by its pid."""
from __future__ import annotations

import os
import re
import signal

from webhook.isolation.desired import ALLOW_DNS, DEFAULT_DENY
from tests.test_isolation_controller import has_policies, namespace, start_serve_with_controller
from tests.waiting import wait_until

STARTED = re.compile(r"pod agent started in process (\d+)")


def agent_pids(server) -> list[int]:
    return [int(m.group(1)) for m in STARTED.finditer(server.log_text())]


def test_a_killed_agent_is_started_again_and_keeps_reconciling(kube_api, tmp_path):
    server = start_serve_with_controller(kube_api, tmp_path)
    try:
        kube_api.put_object(namespace("shop", "egress"))
        wait_until(has_policies(kube_api, "shop", ALLOW_DNS, DEFAULT_DENY), "policies from the first agent", timeout=30)
        (first,) = agent_pids(server)

        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(agent_pids(server)) == 2, "a second agent", timeout=30)
        second = agent_pids(server)[1]
        assert second != first
        assert "the pod agent (process %d" % first in server.log_text()
        assert server.get("/healthz")[0] == 200  # the webhook answered throughout

        # The new agent does the agent's work: a namespace labelled now gets its policies.
        kube_api.put_object(namespace("web", "egress"))
        wait_until(has_policies(kube_api, "web", ALLOW_DNS, DEFAULT_DENY), "policies from the second agent",
                   timeout=45)
    finally:
        server.stop()
    # Stopping the server stops the agent for good: no third one, and the second is gone.
    assert len(agent_pids(server)) == 2
    try:
        os.kill(second, 0)
        still_there = True
    except ProcessLookupError:
        still_there = False
    assert not still_there
