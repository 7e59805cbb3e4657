"""Shared pytest fixtures. Each feature keeps its fixtures in its own module; import them here."""
from tests.kubeapi.fixtures import *  # noqa
