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


__all__ = ["kube_api"]
