"""Benchmark: what one request costs the server, by how its body is framed (issue 13).

    python -m bench edge_cost [--size-mib 2] [--repeat 3] [--json FILE]

Starts `netpol-guard serve --cluster examples/cluster` pinned to one CPU (bench/stall.py's
start_server: one worker, as under the chart's one-CPU limit) and sends, each on a fresh
TLS connection, the same valid review (examples/admission/create-allowed.json padded with
JSON whitespace to --size-mib) with a Content-Length, then chunked in 64 and in 4,000
chunks, then a body in MAX_CHUNKS + 1 one-byte chunks (refused). Reports the server's CPU
seconds (utime + stime of master and workers) per request, best of --repeat, and the
status line. Before the fix a 2 MiB body in 4,000 chunks cost ~5 s: gunicorn's chunked
reader, handed the whole request at once, copied the rest of it for every chunk.

Every loop is bounded; the server is started and stopped by its pid.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time

from bench.stall import REVIEW, client_context, cpu_seconds, start_server, stop_server
from webhook.admission.transport import MAX_CHUNKS

HEAD = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"


def chunked(body: bytes, chunks: int) -> bytes:
    size = -(-len(body) // chunks)
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return (HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n")


def requests(size_mib: float) -> dict[str, bytes]:
    body = REVIEW.read_bytes().rstrip() + b" " * int(size_mib * 1024 * 1024)
    return {
        "content-length": HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body,
        "chunked x64": chunked(body, 64),
        "chunked x4000": chunked(body, 4000),
        f"chunked x{MAX_CHUNKS + 1} (1-byte)": chunked(b" " * (MAX_CHUNKS + 1), MAX_CHUNKS + 1),
    }


def status_of(port: int, ctx, data: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), 30) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(data)
        answer = b""
        while b"\r\n" not in answer:
            chunk = tls.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0].decode("latin-1")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench edge_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=float, default=2.0, help="padded body size (the server takes up to 3 MiB)")
    p.add_argument("--repeat", type=int, default=3, help="requests of each kind; the best counts")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="bench-edge-")
    proc, port, ca = start_server(workdir, None, None)
    ctx = client_context(ca)
    results = {}
    try:
        for name, data in requests(args.size_mib).items():
            best, status = None, ""
            for _ in range(max(1, min(args.repeat, 10))):
                before = cpu_seconds(proc.pid)
                status = status_of(port, ctx, data)
                time.sleep(0.3)  # the worker finishes its bookkeeping (audit line, metrics)
                used = cpu_seconds(proc.pid) - before
                best = used if best is None else min(best, used)
            results[name] = {"status": status, "server_cpu_s": round(best, 3), "wire_bytes": len(data)}
            print(f"{name:28} {status:28} server CPU {best:.3f} s  ({len(data):,} bytes)", flush=True)
    finally:
        stop_server(proc)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
