"""Metric names follow the Prometheus conventions: counters end in `_total` (and only they
do), a `netpol_guard_build_info` gauge carries the version, and the live cache's counts are
real counters - summed over workers, never going down whichever worker serves the scrape."""
import re
import time

from tests.kubeapi.fixtures import write_kubeconfig
from tests.server_fixture import serve  # noqa: F401 (fixture)
from webhook import __version__
from webhook.metrics import HELP, Metrics

RENAMED = {"netpol_guard_cache_relists": "netpol_guard_cache_relists_total",
           "netpol_guard_cache_reconnects": "netpol_guard_cache_reconnects_total",
           "netpol_guard_cache_errors": "netpol_guard_cache_errors_total"}


def test_every_counter_ends_in_total_and_nothing_else_does():
    for name, (kind, _) in HELP.items():
        assert name.startswith("netpol_guard_") and re.fullmatch(r"[a-z_]+", name), name
        assert (kind == "counter") == name.endswith("_total"), name
        if kind == "gauge":
            assert not name.endswith(("_count", "_sum", "_bucket")), name


def test_build_info_says_which_version_runs():
    text = Metrics().render({})
    assert "# TYPE netpol_guard_build_info gauge" in text
    assert re.search(r'^netpol_guard_build_info\{version="%s",python="[0-9.]+"\} 1$' % re.escape(__version__),
                     text, re.M)


def test_raise_to_never_lowers_a_counter():
    m = Metrics()
    m.raise_to("netpol_guard_cache_relists_total", 3)
    m.raise_to("netpol_guard_cache_relists_total", 1)
    assert "netpol_guard_cache_relists_total 3" in m.render({})


def test_operations_doc_lists_every_metric_and_every_rename():
    from pathlib import Path
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    for name in HELP:
        assert f"`{name}`" in doc or name.endswith(("_reconnects_total", "_errors_total")), name
    for old, new in RENAMED.items():
        assert f"`{old}` | `{new}`" in doc, old


def _value(text, name):
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_live_cache_counters_are_summed_and_monotonic_across_workers(serve, kube_api, tmp_path):
    kube_api.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, kube_api.url)
    server = serve(["--workers", "2", "--threads", "2", "--kubeconfig", str(kubeconfig)],
                   env={"HOME": str(tmp_path)})

    def scrape():
        client = server.client()  # a new connection: either worker may answer
        try:
            return client.get("/metrics")[1]
        finally:
            client.close()

    first = scrape()
    assert "# TYPE netpol_guard_cache_reconnects_total counter" in first
    assert not re.search(r"^netpol_guard_cache_(relists|reconnects|errors) ", first, re.M)
    kube_api.drop_watches()
    seen, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline and len(seen) < 200:
        seen.append(_value(scrape(), "netpol_guard_cache_reconnects_total") or 0.0)
        if seen[-1] >= 2:  # both workers reconnected and each has published its share
            break
        time.sleep(0.1)
    assert seen == sorted(seen), seen
    assert seen[-1] >= 2, seen
