"""Run benchmarks: `python -m bench` runs every module in bench/ that defines main(argv);
`python -m bench NAME [ARGS...]` runs one of them with its own arguments
(e.g. `python -m bench webhook --quick`). Modules are discovered, not listed, so a new
bench/<name>.py with a main() is picked up without editing this file.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def discover() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if callable(getattr(module, "main", None)):
            found[info.name] = module
    return found


def main(argv: list[str]) -> int:
    benches = discover()
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("\navailable:", ", ".join(benches) or "(none)")
        return 0
    if argv:
        name, rest = argv[0], argv[1:]
        if name not in benches:
            print(f"python -m bench: no benchmark {name!r}; available: {', '.join(benches)}", file=sys.stderr)
            return 2
        return int(benches[name].main(rest) or 0)
    status = 0
    for name, module in benches.items():
        print(f"==> bench {name}", flush=True)
        code = int(module.main([]) or 0)
        if code:
            print(f"==> bench {name} failed with exit code {code}", file=sys.stderr)
            status = status or code
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
