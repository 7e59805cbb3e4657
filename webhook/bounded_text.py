"""Text a person reads, bounded: a finding's message or fix can quote what the input
holds (a label value of a megabyte), and a denial that kubectl prints, a warning, or a
line in a CI log should not carry that. Each piece is clipped on its own and what was
left out is counted, so the reader knows there was more and where to look for it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

# Per finding. Generous: the longest message a rule writes about sane input is a few
# hundred characters, a fix snippet a few dozen lines.
MESSAGE_MAX_CHARS = 2000
FIX_MAX_CHARS = 4000
# policy (namespace/name: 253 + 63 characters at most in Kubernetes) and field path
NAME_MAX_CHARS = 400


def clip(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


# Input text quoted on a line of our own (an error line, a "note: skipped" line): a value, a
# kind, a command-line argument - the same bound as a value quoted in a webhook's 400 answer.
QUOTE_MAX_CHARS = 100
# A file name: long enough for any real path, short enough that a line stays a line.
PATH_MAX_CHARS = 1000


def shown(text: Any, limit: int = QUOTE_MAX_CHARS) -> str:
    """Text taken from the input (a file name, a kind, a value, an argument) as it may be
    put on a line of output: clipped, and every character that is not printable escaped
    (see escaped), so nothing from the input starts a new line (GitHub Actions reads
    `::error`/`::stop-commands::` lines from stdout and stderr alike), moves the cursor or
    sets the terminal's title. Printable text, the usual case, comes back as it was."""
    return escaped(clip(str(text), limit))


def escaped(text: str, keep: str = "") -> str:
    """``text`` with every character that is not printable (and not in ``keep``, e.g. the
    newlines of a fix snippet) written as Python writes it: \\n, \\x1b, \\u2028. What is
    left is valid in XML 1.0 and encodes in UTF-8: a file name that is not UTF-8 (each
    undecodable byte a surrogate, as os.fsdecode gives it) shows the byte, \\xff."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in keep else _escaped(ch) for ch in text)


def shown_path(path: Any) -> str:
    """A file name as shown on a line (see shown)."""
    return shown(path, PATH_MAX_CHARS)


def quoted(value: Any, limit: int = QUOTE_MAX_CHARS) -> str:
    """repr() of a value from the input, clipped: an error message must not echo a megabyte
    someone put in `kind`. A long string is cut before repr (a huge one costs nothing); repr
    itself escapes what is not printable."""
    if isinstance(value, str) and len(value) > limit:
        return f"{repr(value[:limit])}... ({len(value) - limit:,} more characters)"
    return shown(repr(value), limit)


def _escaped(ch: str) -> str:
    if "\udc80" <= ch <= "\udcff":  # a byte of a file name that is not UTF-8
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return repr(ch)[1:-1]


def clip_optional(text: Optional[str], limit: int) -> Optional[str]:
    return None if text is None else clip(text, limit)


def bounded_finding(f):
    """The finding with message, fix, policy and path clipped (the same object when
    nothing needs clipping, as for every finding about sane input)."""
    if (len(f.message) <= MESSAGE_MAX_CHARS and (f.fix is None or len(f.fix) <= FIX_MAX_CHARS)
            and len(f.policy) <= NAME_MAX_CHARS and len(f.path) <= NAME_MAX_CHARS):
        return f
    return replace(f, message=clip(f.message, MESSAGE_MAX_CHARS), fix=clip_optional(f.fix, FIX_MAX_CHARS),
                   policy=clip(f.policy, NAME_MAX_CHARS), path=clip(f.path, NAME_MAX_CHARS))
