"""Text a person reads, bounded: a finding's message or fix can quote what the input
holds (a label value of a megabyte), and a denial that kubectl prints, a warning, or a
line in a CI log should not carry that. Each piece is clipped on its own and what was
left out is counted, so the reader knows there was more and where to look for it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

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
