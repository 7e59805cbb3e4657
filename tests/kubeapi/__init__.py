"""A stateful Kubernetes API stand-in served over HTTP, for tests and benchmarks."""

from .faults import Fault, RequestRecord
from .server import KubeAPI

__all__ = ["KubeAPI", "Fault", "RequestRecord"]
