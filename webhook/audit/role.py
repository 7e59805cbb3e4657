"""The audit as a role of the pod agent (webhook/agent.py): its own live view of the cluster,
fed through a Recorder, and the AuditLoop in a daemon thread writing only while the shared
elector says this replica leads."""
from __future__ import annotations

import logging
import threading
from typing import Any, Optional

from webhook.config import Config

log = logging.getLogger(__name__)


class RunningAudit:
    def __init__(self, loop: Any, source: Any, thread: threading.Thread, stop: threading.Event):
        self.loop, self.source, self.thread, self._stop = loop, source, thread, stop

    def stop(self, timeout: float = 15.0) -> None:
        """End the loop (no write in flight when this returns), then the watches."""
        self._stop.set()
        self.thread.join(timeout)
        self.source.stop()


def start_audit(api_client: Any, config: Config, elector: Any, metrics_dir: Optional[str] = None) -> RunningAudit:
    from webhook.audit.feed import Recorder
    from webhook.audit.loop import AuditLoop
    from webhook.audit.writing import PolicyEvents, ReportWriter
    from webhook.cluster.live import LiveSource
    from webhook.metrics import Metrics

    a = config.audit
    source = LiveSource(api_client, config=config, admin_policies=False)  # the rules read NetworkPolicies only
    recorder = Recorder(source.view)
    source.recorder = recorder
    source.start()
    loop = AuditLoop(source.view, recorder, config, ReportWriter(api_client, owner_cluster_role=a.ownerClusterRole),
                     PolicyEvents(api_client, instance=elector.identity) if a.events else None,
                     is_leader=elector.is_leader, ready=source.ready,
                     metrics=Metrics(metrics_dir) if metrics_dir else None, gauges_dir=metrics_dir,
                     debounce=a.debounceMilliseconds / 1000, max_delay=a.maxDelayMilliseconds / 1000,
                     full_seconds=float(a.fullSeconds) if a.fullSeconds else float("inf"),
                     max_events=a.maxEventsPerPass)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), name="audit", daemon=True)
    thread.start()
    return RunningAudit(loop, source, thread, stop)
