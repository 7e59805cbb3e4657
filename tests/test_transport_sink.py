"""AnswerSink (webhook/admission/transport.py): what a request thread writes its answer to.
It must never block on a client that does not read, must keep every byte in order (what
the socket did not take is left on the connection for the I/O loop), and must carry
gunicorn's own error answers too."""
from __future__ import annotations

import socket

import pytest
from gunicorn import util

from webhook.admission.transport import AnswerSink, Conn


@pytest.fixture
def pair():
    """(a connection whose socket is ours, the client's end), small buffers both ways."""
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ours.setblocking(False)
    yield Conn(ours, ("127.0.0.1", 1), ("127.0.0.1", 2), 1024), theirs
    ours.close()
    theirs.close()


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(0.2)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


def test_what_the_socket_does_not_take_is_kept_in_order_without_blocking(pair):
    conn, theirs = pair
    answer = bytes(range(256)) * 4096  # 1 MiB: far more than the buffers hold
    AnswerSink(conn).sendall(answer)  # returns at once although nobody reads
    assert conn.out, "nothing was left for the I/O loop"
    AnswerSink(conn).sendall(b"after")  # once something waits, the rest waits behind it
    received = read_all(theirs)
    assert 0 < len(received) < len(answer)
    assert received + bytes(conn.out) == answer + b"after"


def test_a_small_answer_goes_out_at_once(pair):
    conn, theirs = pair
    AnswerSink(conn).sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not conn.out
    assert read_all(theirs).startswith(b"HTTP/1.1 200 OK")


def test_gunicorn_error_pages_reach_the_client_through_the_sink(pair):
    conn, theirs = pair
    util.write_error(AnswerSink(conn), 500, "Internal Server Error", "")
    assert read_all(theirs).startswith(b"HTTP/1.1 500 Internal Server Error")
