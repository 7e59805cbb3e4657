"""The `netpol-guard` command line: one argparse tree, one module per command.

Each module in webhook/commands/ exposes NAME, HELP, add_arguments(parser) and
run(args) -> exit code. Command modules import their heavy dependencies inside run()
so that `--help` and `lint` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from webhook import __version__

# Order is the order shown in --help.
COMMAND_MODULES = (
    "lint", "simulate", "audit", "generate", "rules", "serve", "controller", "isolation", "certs",
    "completion",
)

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Unusable input or usage: printed as one clear message, exit 2."""


# A number on the command line has at most this many digits: enough for any count or day
# span, and int() of thousands of digits is not something an argument should cost.
WHOLE_NUMBER_MAX_DIGITS = 18


def whole_number(text: str) -> int:
    """The argparse type of every integer option: ASCII digits, an optional leading minus
    (the command says which range it takes). int() alone also takes '８' (full-width), '٣',
    '1_000', ' 5 ' and '+5' - none of them a number anyone meant to type here (Unicode digit
    strings are not numbers anywhere in netpol-guard)."""
    digits = text[1:] if text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > WHOLE_NUMBER_MAX_DIGITS:
        from webhook.bounded_text import quoted
        raise argparse.ArgumentTypeError(f"{quoted(text)} is not a whole number (ASCII digits 0-9, "
                                         f"at most {WHOLE_NUMBER_MAX_DIGITS})")
    return int(text)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep its format
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser(prog: str = "netpol-guard") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Keeps Kubernetes NetworkPolicies correct: lint, simulate, generate, "
        "and an admission webhook that rejects mistakes before they reach a cluster.",
    )
    parser.add_argument("--version", action="version", version=f"netpol-guard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"webhook.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"webhook.commands.{name}":
                continue  # command not built yet
            raise
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None, prog: str = "netpol-guard") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"netpol-guard {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `netpol-guard lint ... | head`
        return EXIT_OK


def kubectl_plugin_main() -> int:
    """The `kubectl-netpol_guard` console script: kubectl finds it on PATH and runs it for
    `kubectl netpol-guard ...` (an underscore in a plugin's file name is a dash on the
    command line). Same commands; help and usage say how it was called."""
    return main(prog="kubectl netpol-guard")
