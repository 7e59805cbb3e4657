"""The request framing the serving worker uses to hand only whole requests to its
request threads (webhook.admission.transport.Scan): where a request ends, whatever
pieces its bytes arrive in."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.admission.transport import Scan, error_response

LIMIT = 1024


def feed(data: bytes, cuts: list[int], limit: int = LIMIT):
    """Feed `data` in pieces (cut at `cuts`), as the poller does; the first answer that
    is not INCOMPLETE, and how many bytes had arrived then."""
    scan, buf = Scan(limit), bytearray()
    bounds = sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]
    start = 0
    for end in bounds:
        buf += data[start:end]
        start = end
        kind, value = scan.step(buf)
        if kind != Scan.INCOMPLETE:
            return kind, value, len(buf)
    return Scan.INCOMPLETE, None, len(buf)


def post(body: bytes, extra: bytes = b"") -> bytes:
    return b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


def chunked(body: bytes, size: int = 7, trailer: bytes = b"") -> bytes:
    out = b"POST /validate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n" + trailer + b"\r\n"


def test_content_length_request_ends_after_its_body():
    req = post(b'{"a": 1}')
    assert feed(req + b"GET / HTTP/1.1\r\n", [])[:2] == (Scan.COMPLETE, len(req))
    assert feed(req[:-1], [])[0] == Scan.INCOMPLETE


def test_no_body():
    req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    assert feed(req * 2, [])[:2] == (Scan.COMPLETE, len(req))


def test_chunked_request_ends_after_the_last_chunk_and_trailers():
    for req in (chunked(b"x" * 50), chunked(b"y" * 20, trailer=b"X-Check: 1\r\n")):
        assert feed(req + b"next", [])[:2] == (Scan.COMPLETE, len(req))
        assert feed(req[:-1], [])[0] == Scan.INCOMPLETE


def test_bodies_over_the_limit_go_to_the_app_with_their_head():
    # the app answers body-too-large without the body; the connection closes after it
    assert feed(post(b"x" * (LIMIT + 1)), [100])[0] == Scan.HEAD_ONLY
    assert feed(chunked(b"x" * (LIMIT + 100), size=64), [])[0] == Scan.HEAD_ONLY


def test_framing_gunicorn_refuses_goes_to_its_parser():
    for extra in (b"Content-Length: 4\r\n", b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n"):
        assert feed(post(b"abc", extra), [])[0] == Scan.HEAD_ONLY, extra
    assert feed(b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", [])[0] == Scan.HEAD_ONLY
    bad_chunk = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    assert feed(bad_chunk, [])[0] == Scan.HEAD_ONLY


def test_a_head_that_never_ends_is_refused():
    kind, (status, reason, _), _ = feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 70000, [])
    assert (kind, status, reason) == (Scan.REJECT, 431, "headers-too-large")


def test_error_response_is_json_and_closes():
    raw = error_response(408, "request-timeout", "too slow")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head
    assert b"Content-Length: %d" % len(body) in head
    assert body == b'{"error":{"reason":"request-timeout","message":"too slow"}}'


bodies = st.binary(min_size=0, max_size=300)


@settings(max_examples=300, deadline=None)
@given(bodies, st.booleans(), st.integers(1, 40), st.lists(st.integers(0, 800), max_size=12))
def test_the_end_is_found_whatever_the_pieces(body, use_chunked, chunk, cuts):
    req = chunked(body, chunk) if use_chunked else post(body)
    stream = req + post(b"{}")  # a pipelined request behind it
    kind, end, arrived = feed(stream, cuts)
    assert (kind, end) == (Scan.COMPLETE, len(req))
    assert arrived >= len(req)
