"""Bounded polling for tests: wait for something observable, never sleep as an assertion."""
import time


def wait_until(predicate, what: str, timeout: float = 15.0):
    """Poll `predicate` until it returns something truthy (returned); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        time.sleep(0.02)
