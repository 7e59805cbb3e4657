"""pytest fixtures for the Kubernetes API stand-in (imported by tests/conftest.py)."""

import pytest

from tests.kubeapi.server import KubeAPI


@pytest.fixture
def kube_api():
    """A fresh, started KubeAPI for one test; stopped (threads joined) afterwards.

    namespace_delete_delay is short (0.05 s) so namespace deletion tests stay quick."""
    api = KubeAPI(namespace_delete_delay=0.05)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def write_kubeconfig(path, url: str):
    """A kubeconfig at `path` that points the real kubernetes client at the stand-in at `url`
    (no credentials: the stand-in does not authenticate). Returns the path."""
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: standin\n"
        f"clusters: [{{name: standin, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: nobody, user: {}}]\n"
        "contexts: [{name: standin, context: {cluster: standin, user: nobody}}]\n")
    return path


__all__ = ["kube_api"]
