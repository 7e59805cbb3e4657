"""The gunicorn worker `serve` runs: gthread's thread pool, fed only complete requests.

gunicorn's gthread worker hands every new connection to a request thread, which does the
TLS handshake and reads the request head and body with blocking calls and no deadline.
With 2 threads per worker, four clients that send one byte of a handshake (or half a
header, or part of a body) and then wait held every request thread of two workers, and
no review was answered for as long as they waited; the worker's own timeout never fired
because its main loop stayed alive (issue 13).

``DeadlineWorker`` keeps the thread pool for what needs it - running the Flask app - and
moves everything a client controls the pace of into the worker's poller (its main
thread), non-blocking, under per-connection deadlines:

- HANDSHAKE_TIMEOUT from accept to a finished TLS handshake;
- REQUEST_TIMEOUT from the end of the handshake (a new connection) or from the first
  byte of the next request (a kept-alive one) until the whole request - head and body,
  by Content-Length or to the end of a chunked body - is buffered;
- idle between requests on a kept-alive connection: up to ``keepalive`` (120 s, see
  webhook/gunicorn_conf.py) - being idle is allowed, being stuck halfway is not;
- a closing connection lingers CLOSE_LINGER at most to drain what the client still sends.

Only a request whose bytes are all buffered goes to a request thread, with the bytes put
in front of gunicorn's own parser (so parsing and the WSGI environ are gunicorn's, as
before), so a request thread never waits on a client to send. Nor to read: the thread
writes the answer without blocking, and what the socket does not take at once (a client
that does not read its answers - four of them had held every request thread for 10 s
each, over and over) is handed to the I/O loop, which sends it as the client reads and
closes the connection if the answer is not taken within ANSWER_TIMEOUT. A connection past
its deadline gets a 408 (JSON, like every error from the server) when it had sent part
of a request, and is closed; the deadlines are checked every SWEEP_INTERVAL.

Bounds: at most ``worker_connections`` connections per worker (gunicorn's setting; when
it is reached, the connection that has waited longest without a whole request is closed
to make room, so stalled clients cannot fill the worker either); a
request head of at most MAX_HEAD_BYTES (431 beyond it); a body of at most the app's
``server.maxRequestBytes`` is buffered (a larger declared length goes to the app at once
with only its head, the app answers 400 body-too-large, and the connection closes); and
all partly received requests of a worker together at most BUFFER_BUDGET bytes (503 to
the connection that would go over), so memory stays bounded whatever clients send.

On SIGTERM the worker stops accepting, answers every request it has received or is
receiving (within graceful_timeout), keeps idle kept-alive connections open for
STOP_KEEPALIVE_LINGER in case a request is already on its way (answered with
"Connection: close"), and looks at each once more before closing it.
"""
from __future__ import annotations

import errno
import json
import re
import selectors
import socket
import ssl
import struct
import time
from datetime import datetime
from functools import partial
from typing import Optional

from gunicorn import http
from gunicorn import sock as gsock
from gunicorn.http import errors as herrors
from gunicorn.http.unreader import Unreader
from gunicorn.http import wsgi
from gunicorn.workers.gthread import ThreadWorker

HANDSHAKE_TIMEOUT = 5.0
REQUEST_TIMEOUT = 5.0
ANSWER_TIMEOUT = 5.0  # from the first answer byte the socket did not take to the last
WRITE_CHUNK = 16 * 1024  # one TLS record
# The kernel's send buffer per connection (it doubles the figure for its bookkeeping).
# Left to autotuning, a client that pipelines requests and reads none of the answers made
# the kernel hold ~2.3 MB of them per connection - memory charged to the pod's cgroup, so
# a few hundred such connections could get the pod OOM-killed. An answer is rarely more
# than a few KB; the rest of a larger one waits in conn.out under ANSWER_TIMEOUT.
SEND_BUFFER = 64 * 1024
CLOSE_LINGER = 2.0
STOP_KEEPALIVE_LINGER = 2.0
SWEEP_INTERVAL = 0.25
STALL_REPORT_INTERVAL = 10.0
MAX_HEAD_BYTES = 64 * 1024
DEFAULT_MAX_BODY = 3 * 1024 * 1024  # when the app does not say (webhook.config's default)
BUFFER_BUDGET_MIN = 64 * 1024 * 1024
READ_SIZE = 64 * 1024  # a TLS record is at most 16 KiB; larger reads only allocate more
ACCEPT_BURST = 64
MAX_CHUNK_LINE = 4096
# A chunked body in more chunks than this is refused (400): framing each chunk costs the
# I/O loop ~1 us, and a 3 MiB body in 1-byte chunks would be 3 million of them. Clients
# that stream (Go's included) write chunks of kilobytes; the API server sends a length.
MAX_CHUNKS = 4096
# gunicorn's parser is given the buffered request at most FEED_PIECE bytes at a time (or as
# much as it says it still wants of a body, up to FEED_MAX): it assumes socket-sized reads,
# and handed a whole request at once its chunked-body reader copied the rest of the
# request for every chunk - a 40 KB body in 1-byte chunks cost 0.7 s of CPU, 221 KB 41 s.
FEED_PIECE = 8 * 1024
FEED_MAX = 1024 * 1024
# A request that came longer ago than its client waits is not judged (503 too-late):
# the API server says how long it waits (?timeout=3s on every webhook call); without it,
# the longest timeout a webhook configuration allows.
LONGEST_CLIENT_TIMEOUT = 30.0
# At worker_connections a connection counts as stalled (and is closed first to make room)
# once it has spent this long in a handshake or a partial request; younger ones are
# clients still on their way.
STALLED_AFTER = 1.0
CLOSE_DRAIN_MAX = 64 * 1024

# connection states
HANDSHAKE, READING, IDLE, BUSY, WRITING, CLOSING = "handshake", "reading", "idle", "busy", "writing", "closing"


class Scan:
    """Where the next HTTP/1.1 request in a buffer ends, found incrementally.

    ``step(buf)`` answers one of
      (INCOMPLETE, None)        - more bytes are needed;
      (COMPLETE, end)           - buf[:end] is one whole request;
      (HEAD_ONLY, end)          - hand buf[:end] over and close after the answer: the body
                                  is larger than the app takes, or its framing is something
                                  gunicorn's parser will refuse (its error is the answer);
      (REJECT, (status, reason, message)).
    It only frames requests; validating them is gunicorn's parser's job.
    """

    INCOMPLETE, COMPLETE, HEAD_ONLY, REJECT = "incomplete", "complete", "head-only", "reject"

    def __init__(self, max_body: int, max_head: int = MAX_HEAD_BYTES):
        self.max_body, self.max_head = max_body, max_head
        self.reset()

    def reset(self) -> None:
        self.searched = 0  # the head's end was not found before this offset
        self.body_start: Optional[int] = None
        self.length: Optional[int] = None  # Content-Length, or None for chunked
        self.chunk_pos = 0  # chunked: where the next chunk-size line starts
        self.decoded = 0  # chunked: body bytes in the complete chunks before chunk_pos
        self.chunks = 0  # chunked: complete chunks before chunk_pos

    def step(self, buf: bytearray):
        if self.body_start is None:
            found = buf.find(b"\r\n\r\n", max(0, self.searched - 3))
            if found < 0:
                if len(buf) > self.max_head:
                    return self.REJECT, (431, "headers-too-large",
                                         f"the request head is over {self.max_head} bytes")
                self.searched = len(buf)
                return self.INCOMPLETE, None
            if found > self.max_head:
                return self.REJECT, (431, "headers-too-large", f"the request head is over {self.max_head} bytes")
            self.body_start = self.chunk_pos = found + 4
            framing = self._framing(bytes(buf[:found]))
            if framing is None:
                return self.HEAD_ONLY, len(buf)
            self.length = framing if framing >= 0 else None
            if self.length is not None and self.length > self.max_body:
                return self.HEAD_ONLY, len(buf)
        if self.length is not None:
            end = self.body_start + self.length
            return (self.COMPLETE, end) if len(buf) >= end else (self.INCOMPLETE, None)
        return self._chunks(buf)

    @staticmethod
    def _framing(head: bytes) -> Optional[int]:
        """The body's Content-Length, -1 for chunked, 0 for none, None for framing gunicorn
        refuses (several or non-numeric lengths, both headers, other transfer codings)."""
        lengths, codings = [], []
        for line in head.split(b"\r\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.lower()
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"transfer-encoding":
                codings.extend(c.strip().lower() for c in value.split(b","))
        if codings:
            return -1 if not lengths and codings[-1] == b"chunked" else None
        if not lengths:
            return 0
        if len(set(lengths)) != 1 or not (lengths[0].isdigit() and lengths[0].isascii()) or len(lengths[0]) > 18:
            return None
        return int(lengths[0])

    def _chunks(self, buf: bytearray):
        pos = self.chunk_pos
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                if len(buf) - pos > MAX_CHUNK_LINE:
                    return self.HEAD_ONLY, len(buf)  # gunicorn's parser refuses the chunk line
                self.chunk_pos = pos
                return self.INCOMPLETE, None
            size_text = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16) if size_text and len(size_text) <= 16 else -1
            except ValueError:
                size = -1
            if size < 0:
                return self.HEAD_ONLY, len(buf)  # an invalid chunk size: gunicorn's parser says so
            if size == 0:  # the last chunk, then trailer lines up to an empty one
                end = buf.find(b"\r\n\r\n", line_end)
                if end < 0:
                    if len(buf) - line_end > self.max_head:
                        return self.REJECT, (431, "headers-too-large", "the chunked body's trailer is too large")
                    self.chunk_pos = pos
                    return self.INCOMPLETE, None
                return self.COMPLETE, end + 4
            data_start = line_end + 2
            if len(buf) < data_start + size + 2:
                if self.decoded + min(size, len(buf) - data_start) > self.max_body:
                    return self.HEAD_ONLY, len(buf)  # over the app's limit: it reads limit+1 and says so
                self.chunk_pos = pos
                return self.INCOMPLETE, None
            self.decoded += size
            if self.decoded > self.max_body:
                return self.HEAD_ONLY, len(buf)
            self.chunks += 1
            if self.chunks > MAX_CHUNKS:
                return self.REJECT, (400, "too-many-chunks",
                                     f"a chunked body of more than {MAX_CHUNKS} chunks; send it in larger "
                                     "chunks or with a Content-Length")
            pos = data_start + size + 2


def error_response(status: int, reason: str, message: str) -> bytes:
    """A complete HTTP/1.1 error answer with the webhook's JSON error body; closes."""
    body = json.dumps({"error": {"reason": reason, "message": message}}, separators=(",", ":")).encode()
    phrase = {400: "Bad Request", 403: "Forbidden", 405: "Method Not Allowed", 408: "Request Timeout",
              413: "Content Too Large", 414: "URI Too Long", 417: "Expectation Failed",
              431: "Request Header Fields Too Large", 500: "Internal Server Error",
              501: "Not Implemented", 503: "Service Unavailable"}.get(status, "Error")
    head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


class FeedUnreader(Unreader):
    """Where gunicorn's parser reads a request from: the bytes the I/O loop buffered (never
    the socket), handed out FEED_PIECE at a time, or as much as the parser says it still
    wants of a body up to FEED_MAX (see FEED_PIECE for why not all at once)."""

    def __init__(self):
        super().__init__()
        self.data = bytearray()

    def feed(self, data: bytes) -> None:
        self.data += data

    def chunk(self, size_hint=None) -> bytes:
        size = min(max(size_hint or 0, FEED_PIECE), FEED_MAX)
        piece = bytes(self.data[:size])
        del self.data[:size]  # from the front of a bytearray: no copy of the rest
        return piece


def client_timeout(query: str) -> float:
    """Seconds the client waits, from the ?timeout= the API server puts on webhook calls
    (a Go duration: 3s, 1m0s, 500ms); LONGEST_CLIENT_TIMEOUT when absent or unreadable."""
    match = re.search(r"(?:^|&)timeout=([0-9a-z.]{1,32})(?:&|$)", query or "")
    if not match:
        return LONGEST_CLIENT_TIMEOUT
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.fullmatch(r"(?:[0-9]+(?:\.[0-9]+)?(?:h|ms|m|s|us|ns))+", match.group(1))
    if not parts:
        return LONGEST_CLIENT_TIMEOUT
    total = sum(float(n) * units[u] for n, u in re.findall(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s|us|ns)", match.group(1)))
    return min(total, LONGEST_CLIENT_TIMEOUT) if total > 0 else LONGEST_CLIENT_TIMEOUT


class AnswerSink:
    """What gunicorn's Response writes to in a request thread, instead of the socket.

    It sends without blocking; whatever the socket does not take at once is queued on the
    connection (``conn.out``) for the I/O loop, so a client that does not read cannot hold
    a request thread. Once something is queued everything after it is queued too, in
    order. A TLS write that wanted to wait is retried by the loop with the same bytes at
    the start of the buffer (OpenSSL requires that; Python allows the buffer to move)."""

    __slots__ = ("conn",)

    def __init__(self, conn: "Conn"):
        self.conn = conn

    def sendall(self, data) -> None:
        conn = self.conn
        view = memoryview(data).cast("B")
        while view and not conn.out:
            try:
                sent = conn.sock.send(view[:WRITE_CHUNK])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                break
            view = view[sent:]
        if view:
            conn.out += view

    def send(self, data) -> int:  # gunicorn's "100 Continue"
        self.sendall(data)
        return len(data)

    @staticmethod
    def gettimeout() -> float:  # gunicorn's write_nonblock (its own error pages) asks
        return 0.0


class Conn:
    __slots__ = ("sock", "client", "server", "parser", "state", "deadline", "since", "pending", "scan",
                 "events", "callback", "close_after", "eof", "closed", "drained", "out", "keep", "sink",
                 "held", "queued_at")

    def __init__(self, sock, client, server, max_body: int):
        self.sock, self.client, self.server = sock, client, server
        self.parser = None
        self.state = HANDSHAKE
        self.deadline: Optional[float] = None
        self.since = 0.0  # when the connection entered its state
        self.pending = bytearray()
        self.scan = Scan(max_body)
        self.events = 0
        self.callback = None
        self.close_after = False
        self.eof = False
        self.closed = False
        self.drained = 0
        self.out = bytearray()  # answer bytes the socket has not taken yet (see AnswerSink)
        self.keep = False  # whether to keep the connection once out is sent
        self.sink = AnswerSink(self)
        self.held = 0  # bytes of the request handed to a request thread, still in the budget
        self.queued_at = 0.0  # when the request being answered started to arrive

    def enter(self, state: str, now: float, timeout: Optional[float]) -> None:
        self.state, self.since = state, now
        self.deadline = None if timeout is None else now + timeout


class DeadlineWorker(ThreadWorker):
    """gthread with the handshake and request reads in the poller, under deadlines."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.conns: set[Conn] = set()
        self.buffered = 0  # bytes of partly received requests, all connections
        self.max_body = int(getattr(self.app, "max_request_bytes", None) or DEFAULT_MAX_BODY)
        self.budget = max(BUFFER_BUDGET_MIN, 4 * self.max_body)
        self._accept_paused_until = 0.0
        self._stalled, self._stalled_reported = 0, time.monotonic()
        self._late = 0  # requests not judged because their client had given up (request threads count)

    # --- the loop ---------------------------------------------------------------------
    def run(self):
        self.poller.register(self.method_queue.fileno(), selectors.EVENT_READ, self.method_queue.run_callbacks)
        self.set_accept_enabled(True)
        while self.alive:
            self.notify()
            can_accept = time.monotonic() >= self._accept_paused_until
            if can_accept != self._accepting:
                self.set_accept_enabled(can_accept)
            self.wait_for_and_dispatch_events(timeout=SWEEP_INTERVAL)
            if not self.is_parent_alive():
                break
            self._sweep()
        self._drain()

    def _drain(self) -> None:
        """Stop accepting; answer what was received; close idle connections after a linger."""
        self.set_accept_enabled(False)
        now = time.monotonic()
        for conn in list(self.conns):
            if conn.state == IDLE:
                conn.deadline = min(conn.deadline or now, now + STOP_KEEPALIVE_LINGER)
        give_up = now + self.cfg.graceful_timeout
        while self.conns and time.monotonic() < give_up:
            self.notify()
            self.wait_for_and_dispatch_events(timeout=SWEEP_INTERVAL)
            self._sweep()
        for conn in list(self.conns):
            if conn.state != BUSY:
                self._close(conn)
        self.tpool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()
        for s in self.sockets:
            s.close()

    def _sweep(self) -> None:
        now = time.monotonic()
        self._report_stalled(now)
        for conn in [c for c in self.conns if c.deadline is not None and c.deadline <= now]:
            if conn.closed or conn.deadline is None or conn.deadline > now:
                continue
            if conn.state == IDLE:
                # Once more before closing: a request that has arrived meanwhile is served.
                self._read(conn)
                if conn.closed or conn.state != IDLE:
                    continue
                self._close(conn)
            elif conn.state == READING and conn.pending:
                self._count_stalled()
                self._reject(conn, 408, "request-timeout",
                             f"the request was not received in full within {REQUEST_TIMEOUT:g} s", quiet=True)
            elif conn.state == WRITING:
                self._count_stalled()  # its client did not read its answer
                self._close(conn, reset=True)
            else:  # a handshake that did not finish, a silent new connection, a linger
                if conn.state != CLOSING:
                    self._count_stalled()
                self._close(conn)

    # --- connections ------------------------------------------------------------------
    def accept(self, listener):
        for _ in range(ACCEPT_BURST):
            victim = None
            if self.nr_conns >= self.worker_connections:
                victim = self._victim(time.monotonic())
                if victim is None:
                    # Every connection has a request being answered: accept again shortly
                    # (the listener stays readable; not pausing would spin).
                    self._accept_paused_until = time.monotonic() + SWEEP_INTERVAL
                    self.set_accept_enabled(False)
                    return
            try:
                client_sock, client_addr = listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of file descriptors: stop accepting for a moment instead of
                    # spinning on a listener that stays readable.
                    self.log.warning("cannot accept connections: %s", e)
                    self._accept_paused_until = time.monotonic() + 1.0
                    self.set_accept_enabled(False)
                    return
                if e.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK, errno.EPROTO):
                    continue
                raise
            client_sock.setblocking(False)
            client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            if client_sock.family in (socket.AF_INET, socket.AF_INET6):
                client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if victim is not None:  # only now that a client is really waiting
                if victim.state != IDLE:
                    self._count_stalled()
                self._close(victim)
            conn = Conn(client_sock, client_addr, listener.getsockname(), self.max_body)
            conn.callback = partial(self._on_event, conn)
            now = time.monotonic()
            self.nr_conns += 1
            self.conns.add(conn)
            if self.cfg.is_ssl:
                try:
                    conn.sock = gsock.ssl_context(self.cfg).wrap_socket(
                        client_sock, server_side=True, do_handshake_on_connect=False,
                        suppress_ragged_eofs=self.cfg.suppress_ragged_eofs)
                except (ssl.SSLError, OSError) as e:
                    self.log.error("TLS not available for a new connection: %s", e)
                    self._close(conn)
                    continue
                conn.enter(HANDSHAKE, now, HANDSHAKE_TIMEOUT)
            else:
                self._start_reading(conn, now)
            self._want(conn, selectors.EVENT_READ)

    def _victim(self, now: float) -> Optional[Conn]:
        """The connection to close when the worker holds worker_connections and a client is
        waiting to connect: the one stalled longest (a handshake, a partial request or an
        unread answer for STALLED_AFTER or more), else the one idle longest. Stalled clients
        cannot fill the worker and leave the API server waiting in the listen backlog, and
        clients holding idle kept-alive connections cannot lock out new ones (a connection
        still in its first second is not taken for stalled: it was the newcomer that got
        closed when 2,047 idle connections were held)."""
        victim = None
        stalled = now - STALLED_AFTER
        for eligible in (lambda c: c.state in (HANDSHAKE, READING, WRITING, CLOSING) and c.since <= stalled,
                         lambda c: c.state == IDLE):
            for conn in self.conns:
                if eligible(conn) and (victim is None or conn.since < victim.since):
                    victim = conn
            if victim is not None:
                break
        return victim  # None: every connection is being answered or has just arrived

    def _count_stalled(self) -> None:
        self._stalled += 1

    def _report_stalled(self, now: float) -> None:
        """Stalled connections (and requests answered too late) are logged as counts at most
        every STALL_REPORT_INTERVAL, not one line each: an attack must not flood the log."""
        if not (self._stalled or self._late):
            self._stalled_reported = now - STALL_REPORT_INTERVAL  # the next one is reported at once
            return
        if now - self._stalled_reported < STALL_REPORT_INTERVAL:
            return
        if self._stalled:
            self.log.warning("closed %d connections that stalled before sending a whole request or "
                             "taking its answer (TLS handshake within %g s, request within %g s, answer "
                             "within %g s) in the last %.0f s", self._stalled, HANDSHAKE_TIMEOUT,
                             REQUEST_TIMEOUT, ANSWER_TIMEOUT, now - self._stalled_reported)
        if self._late:
            late, self._late = self._late, 0  # request threads add to it; a lost count is harmless
            self.log.warning("answered %d requests 503 without judging them in the last %.0f s: they came "
                             "longer ago than their client waits (the worker is overloaded)",
                             late, now - self._stalled_reported)
        self._stalled, self._stalled_reported = 0, now

    def _start_reading(self, conn: Conn, now: float) -> None:
        conn.parser = http.get_parser(self.cfg, (), conn.client)
        conn.parser.unreader = FeedUnreader()
        conn.enter(READING, now, REQUEST_TIMEOUT)

    def _on_event(self, conn: Conn, _fileobj) -> None:
        if conn.closed:
            return
        if conn.state == HANDSHAKE:
            self._handshake(conn)
        elif conn.state in (READING, IDLE):
            self._read(conn)
        elif conn.state == WRITING:
            self._write(conn)
        elif conn.state == CLOSING:
            self._linger(conn)

    def _handshake(self, conn: Conn) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError, ValueError) as e:
            self.log.debug("TLS handshake failed from %s: %s", conn.client, e)
            self._close_gracefully(conn)  # the alert is sent; a reset would lose it
            return
        self._start_reading(conn, time.monotonic())
        self._read(conn)  # a client may have sent its request with the last handshake flight

    def _read(self, conn: Conn) -> None:
        """Read what the socket has (non-blocking); hand over a request once it is whole."""
        while not conn.eof:
            try:
                data = conn.sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                break
            except ssl.SSLWantWriteError:
                self._want(conn, selectors.EVENT_WRITE)
                return
            except (ssl.SSLError, OSError) as e:
                self.log.debug("connection from %s failed: %s", conn.client, e)
                self._close(conn)
                return
            if not data:
                conn.eof = True
                break
            if conn.state == IDLE:
                conn.enter(READING, time.monotonic(), REQUEST_TIMEOUT)
            conn.pending += data
            self.buffered += len(data)
            if self.buffered > self.budget:
                self.log.warning("partly received requests hold %d bytes, over the worker's budget of %d; "
                                 "refusing the request from %s", self.buffered, self.budget, conn.client)
                self._reject(conn, 503, "server-busy", "the server is receiving too many large requests; retry")
                return
            if self._advance(conn):
                return
        if not conn.eof:
            self._want(conn, selectors.EVENT_READ)
            return
        # The client closed (or half-closed) its side.
        if conn.pending and conn.scan.body_start is not None:
            # The head is here, the body was cut off: the app sees the body end early and
            # answers 400 (the client may still read it after a half-close).
            conn.close_after = True
            self._dispatch(conn, len(conn.pending))
        else:
            self._close(conn)

    def _advance(self, conn: Conn) -> bool:
        """Act on a complete request or a refusal; True when the connection left the poller's care."""
        if conn.state != READING or not conn.pending:
            return False
        kind, value = conn.scan.step(conn.pending)
        if kind == Scan.INCOMPLETE:
            return False
        if kind == Scan.REJECT:
            self._reject(conn, *value)
            return True
        if kind == Scan.HEAD_ONLY:
            conn.close_after = True
        self._dispatch(conn, value)
        return True

    def _dispatch(self, conn: Conn, end: int) -> None:
        conn.parser.unreader.feed(conn.pending[:end])
        del conn.pending[:end]
        # Still counted in the budget until a request thread is done with it: requests
        # waiting for a thread are held in memory too (100 queued 3 MiB bodies took a
        # worker to 675 MB when only partly received ones counted).
        conn.held = end
        conn.scan.reset()
        self._unwant(conn)
        # How long its client has been waiting, at least: since the handshake ended or the
        # request's first byte came (a client's timeout starts before it connects).
        conn.queued_at = conn.since
        conn.enter(BUSY, time.monotonic(), None)
        fut = self.tpool.submit(self._serve, conn)
        fut.add_done_callback(lambda f: self.method_queue.defer(self._served, conn, f))

    def _served(self, conn: Conn, fut) -> None:  # main thread, after a request thread
        try:
            keep = bool(fut.result()) if not fut.cancelled() else False
        except Exception:  # noqa: BLE001 - _serve handles its own; a cancelled pool at exit
            keep = False
        self.buffered -= conn.held
        conn.held = 0
        if conn.closed:
            return
        if conn.out:  # the client has not read all of it yet: the loop sends the rest
            self.buffered += len(conn.out)
            conn.keep = keep
            conn.enter(WRITING, time.monotonic(), ANSWER_TIMEOUT)
            self._write(conn)
            return
        self._answered(conn, keep)

    def _write(self, conn: Conn) -> None:
        """Send what the socket takes of a queued answer (non-blocking); go on once it is out."""
        while conn.out:
            try:
                sent = conn.sock.send(conn.out[:WRITE_CHUNK])
            except (ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
                self._want(conn, selectors.EVENT_WRITE)
                return
            except ssl.SSLWantReadError:
                self._want(conn, selectors.EVENT_READ)
                return
            except (ssl.SSLError, OSError) as e:
                self.log.debug("connection from %s failed while taking its answer: %s", conn.client, e)
                self._close(conn)
                return
            del conn.out[:sent]
            self.buffered -= sent
        self._answered(conn, conn.keep)

    def _answered(self, conn: Conn, keep: bool) -> None:
        """The whole answer is out: close, or serve the next request on the connection."""
        if not keep or conn.close_after:
            self._close_gracefully(conn)
            return
        now = time.monotonic()
        linger = self.cfg.keepalive if self.alive else min(self.cfg.keepalive, STOP_KEEPALIVE_LINGER)
        conn.enter(IDLE, now, linger)
        if conn.pending:  # a pipelined request, already (partly) here
            conn.enter(READING, now, REQUEST_TIMEOUT)
            if self._advance(conn):
                return
        if conn.eof:
            self._close(conn)
        elif isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
            self._read(conn)
        else:
            self._want(conn, selectors.EVENT_READ)

    def _reject(self, conn: Conn, status: int, reason: str, message: str, quiet: bool = False) -> None:
        """Answer an error from the poller (best effort: a few hundred bytes, non-blocking) and close."""
        if not quiet:
            self.log.info("refused a request from %s: %d %s", conn.client[0] if conn.client else "?", status, message)
        try:
            conn.sock.send(error_response(status, reason, message))
        except (ssl.SSLError, OSError):
            pass
        self._close_gracefully(conn)

    def _close_gracefully(self, conn: Conn) -> None:
        """Half-close, then drain what the client still sends for CLOSE_LINGER (non-blocking),
        so unread request bytes do not make the kernel reset the answer away."""
        self.buffered -= len(conn.pending)
        conn.pending = bytearray()
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except (ssl.SSLError, OSError, ValueError):
            self._close(conn)
            return
        conn.enter(CLOSING, time.monotonic(), CLOSE_LINGER)
        self._want(conn, selectors.EVENT_READ)

    def _linger(self, conn: Conn) -> None:
        while True:
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except (ssl.SSLError, OSError):
                break
            if not data:
                break
            conn.drained += len(data)
            if conn.drained > CLOSE_DRAIN_MAX:
                break
        self._close(conn)

    def _want(self, conn: Conn, events: int) -> None:
        if conn.events == events:
            return
        try:
            if conn.events:
                self.poller.modify(conn.sock, events, conn.callback)
            else:
                self.poller.register(conn.sock, events, conn.callback)
            conn.events = events
        except (OSError, ValueError, KeyError):
            self._close(conn)

    def _unwant(self, conn: Conn) -> None:
        if conn.events:
            try:
                self.poller.unregister(conn.sock)
            except (OSError, ValueError, KeyError):
                pass
            conn.events = 0

    def _close(self, conn: Conn, reset: bool = False) -> None:
        """Close (reset: with an RST, so the kernel drops the unsent answer at once instead
        of holding it in an orphaned socket while it probes a client that reads nothing)."""
        if conn.closed:
            return
        if reset:
            try:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        conn.closed = True
        self._unwant(conn)
        self.buffered -= len(conn.pending)
        conn.pending = bytearray()
        if conn.state == WRITING:
            self.buffered -= len(conn.out)
        conn.out = bytearray()
        try:
            conn.sock.close()
        except OSError:
            pass
        self.conns.discard(conn)
        self.nr_conns -= 1

    # --- in a request thread --------------------------------------------------------------
    def _serve(self, conn: Conn) -> bool:
        """Answer one request whose bytes are all buffered; whether to keep the connection.

        The socket stays non-blocking: the request's bytes are buffered, and the answer goes
        through conn.sink, which queues what the socket does not take for the I/O loop. (No
        mode switches either: each system call lets go of the GIL, and taking it back while
        a request thread runs the app can cost the loop up to the 5 ms switch interval.)"""
        req = None
        try:
            req = next(conn.parser)
            if conn.close_after:
                req.must_close = True
            waited = time.monotonic() - conn.queued_at
            if waited > client_timeout(req.query):
                # Its client has given up (the API server counts it as failed): judging it
                # now would only delay the reviews queued behind it.
                self._late += 1
                conn.sink.sendall(error_response(
                    503, "too-late", f"the request came {waited:.1f} s ago, longer than its client waits "
                    "(the server is overloaded); it was not judged"))
                return False
            # While draining, a connection closes after its answer - unless the client has
            # already sent its next request (pipelined): that one was received, so it is
            # answered too (then the last answer closes). The poller does not touch
            # conn.pending while a request thread has the connection.
            close = not self.alive and not self._whole_request_pending(conn)
            keep = self._respond(req, conn, close)
            # The app may have left part of the body unread; it is buffered, so this does
            # not touch the socket.
            return bool(keep) and not conn.close_after and conn.parser.finish_body()
        except StopIteration:
            return False
        except herrors.NoMoreData as e:
            self.log.debug("client closed the connection mid-request: %s", e)
        except ssl.SSLError as e:
            self.log.debug("TLS error from %s: %s", conn.client, e)
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF, errno.EAGAIN):
                self.log.exception("socket error answering %s", conn.client)
        except Exception as e:  # noqa: BLE001 - gunicorn's parser errors: a JSON 4xx
            self.handle_error(req, conn.sink, conn.client, e)
        return False

    def _whole_request_pending(self, conn: Conn) -> bool:
        return bool(conn.pending) and Scan(self.max_body).step(conn.pending)[0] != Scan.INCOMPLETE

    def _respond(self, req, conn: Conn, close: bool) -> bool:
        """Run the WSGI app for one parsed request and write its answer (what gthread's
        handle_request does, with the decision to close made by the caller); whether the
        connection may be kept."""
        environ, resp = {}, None
        try:
            self.cfg.pre_request(self, req)
            started = datetime.now()
            resp, environ = wsgi.create(req, conn.sink, conn.client, conn.server, self.cfg)
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                close = True
            if close or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.now() - started)
                if hasattr(respiter, "close"):
                    respiter.close()
            return not resp.should_close()
        except OSError:
            raise
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:
                # Part of the answer is out: another (error) answer would corrupt it.
                self.log.exception("Error handling request")
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:  # noqa: BLE001 - a hook's failure does not lose the answer
                self.log.exception("Exception in post_request hook")

    def handle_error(self, req, client, addr, exc):
        """gunicorn's answer to a request its parser refused, with the webhook's JSON body
        instead of gunicorn's HTML page (same status codes as gunicorn)."""
        status, reason = 400, "bad-request"
        if isinstance(exc, herrors.LimitRequestLine):
            status, reason = 414, "request-line-too-long"
        elif isinstance(exc, herrors.LimitRequestHeaders):
            status, reason = 431, "headers-too-large"
        elif isinstance(exc, herrors.UnsupportedTransferCoding):
            status, reason = 501, "unsupported-transfer-coding"
        elif isinstance(exc, herrors.ExpectationFailed):
            status, reason = 417, "expectation-failed"
        elif isinstance(exc, herrors.ForbiddenProxyRequest):
            status, reason = 403, "forbidden"
        if (not isinstance(exc, (herrors.ParseException, ssl.SSLError))
                or isinstance(exc, (herrors.InvalidResponseHeader, herrors.InvalidResponseHeaderName,
                                    herrors.ConfigurationProblem))):
            # not the client's doing: gunicorn's own handling (logs the traceback, 500)
            return super().handle_error(req, client, addr, exc)
        message = str(exc) or type(exc).__name__
        self.log.info("invalid request from %s: %s", addr[0] if addr else "?", message)
        try:
            client.sendall(error_response(status, reason, f"invalid HTTP request: {message}"))
        except (OSError, ssl.SSLError):
            self.log.debug("could not send the error answer")
