"""Run the stand-in as its own process: `python -m tests.kubeapi --port 0` prints its URL."""

import argparse
import signal
import sys
import threading

from .server import KubeAPI


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kubeapi",
                                     description="Kubernetes API stand-in on 127.0.0.1 (plain HTTP).")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    parser.add_argument("--history-size", type=int, default=1000, help="watch events kept (default 1000)")
    parser.add_argument("--namespace-delete-delay", type=float, default=0.2,
                        help="seconds a deleted namespace stays Terminating (default 0.2)")
    args = parser.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        api = KubeAPI(port=args.port, history_size=args.history_size,
                      namespace_delete_delay=args.namespace_delete_delay).start()
    except OSError as exc:
        print(f"kubeapi: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    print(api.url, flush=True)
    try:
        done.wait()
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
