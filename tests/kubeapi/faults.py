"""Fault injection and the request log: what tests use to break the API and to count traffic."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

_REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
            409: "Conflict", 410: "Expired", 422: "Invalid", 429: "TooManyRequests",
            500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def reason_for(code: int) -> str:
    return _REASONS.get(code, "InternalError" if code >= 500 else "BadRequest")


def _compile(method: str, path_regex: str) -> tuple[str, re.Pattern]:
    return method.upper(), re.compile(path_regex)


@dataclass
class Fault:
    """One injected behaviour. `remaining` None means unlimited; `hits` counts applications."""

    method: str
    pattern: re.Pattern
    remaining: int | None
    status: int | None = None  # respond with this error...
    delay: float = 0.0  # ...or sleep this long first, then serve normally
    message: str = ""
    retry_after: int | None = None
    hits: int = 0
    _owner: "FaultPlan | None" = field(default=None, repr=False)

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and self.pattern.search(path) is not None

    def cancel(self) -> None:
        if self._owner is not None:
            self._owner.remove(self)


class FaultPlan:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        fault._owner = self
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> tuple[float, Fault | None]:
        """Consume the faults matching a request: total extra delay, and the first error to return."""
        delay, error = 0.0, None
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(method, path):
                    continue
                if fault.status is not None and error is not None:
                    continue  # one error per request; later ones wait for the next request
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                if fault.status is not None:
                    error = fault
                delay += fault.delay
        return delay, error


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict  # parsed query string, single values as str
    status: int
    started: float  # time.time() when the request arrived
    duration: float  # seconds from arrival until the response was written (watches: until the stream opened)
    namespace: str | None  # namespace segment of the path, if any
    watch: bool

    @property
    def is_write(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
