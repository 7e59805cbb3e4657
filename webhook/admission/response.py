"""The decision vocabulary and the pure AdmissionReview response builder.

Handlers return a ``Decision`` (``allow``, ``deny``, ``patched``, ``with_warnings``);
``decision_from_findings`` turns rule findings into one; ``build_response`` turns a
request plus a decision into the AdmissionReview the API server reads. No Flask here.

What the user sees: kubectl prints a denial as

    Error from server (Forbidden): error when creating "p.yaml": admission webhook
    "validate.netpol-guard.io" denied the request: <status.message>

and each entry of ``warnings`` as ``Warning: <text>``. The API server truncates long
warnings (and drops them past a total size), so each warning is one short line and
their number is bounded. The denial message carries every error (up to
DENIAL_MAX_ERRORS, then how many more), each clipped by webhook.bounded_text: a label
value of a megabyte is quoted by its start, not in full.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Optional, Sequence

from webhook.admission.review import API_VERSION, KIND, AdmissionRequest
from webhook.bounded_text import NAME_MAX_CHARS, bounded_finding, clip
from webhook.rules.base import Finding

WARNING_MAX_CHARS = 120
WARNING_MAX_COUNT = 10
DENIAL_MAX_ERRORS = 50
ELLIPSIS = "..."


@dataclass(frozen=True)
class Decision:
    allowed: bool = True
    message: str = ""  # denial reason (status.message)
    warnings: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()  # what the rules found (metrics and the audit line)
    patch: tuple[dict, ...] = ()  # RFC 6902 operations (mutate only)
    outcome: str = ""  # audit/metrics label when not just allow/deny/warn ("exempt", "no-opinion")

    @property
    def label(self) -> str:
        """The decision as metrics and the audit log name it."""
        if self.outcome:
            return self.outcome
        if not self.allowed:
            return "deny"
        if self.patch:
            return "patch"
        return "warn" if self.warnings else "allow"

    def with_warnings(self, *warnings: str) -> "Decision":
        return replace(self, warnings=self.warnings + tuple(warnings))


def allow(outcome: str = "") -> Decision:
    return Decision(outcome=outcome)


def deny(message: str, findings: Sequence[Finding] = (), warnings: Sequence[str] = ()) -> Decision:
    return Decision(allowed=False, message=message, findings=tuple(findings), warnings=tuple(warnings))


def patched(patch: Sequence[dict], warnings: Sequence[str] = ()) -> Decision:
    return Decision(patch=tuple(patch), warnings=tuple(warnings))


def combine(decisions: Iterable[Decision]) -> Decision:
    """Several handlers' opinions on one request: denied if any denies, everything kept."""
    decisions = list(decisions)
    if not decisions:
        return allow("no-opinion")
    if len(decisions) == 1:
        return decisions[0]
    denials = [d.message for d in decisions if not d.allowed]
    outcome = decisions[0].outcome if all(d.outcome == decisions[0].outcome for d in decisions) else ""
    return Decision(
        allowed=not denials, message="\n".join(denials),
        warnings=tuple(w for d in decisions for w in d.warnings),
        findings=tuple(f for d in decisions for f in d.findings),
        patch=tuple(op for d in decisions for op in d.patch),
        outcome=outcome if not denials else "",
    )


# --- findings -> text -----------------------------------------------------------------

def short(text: str, limit: int = WARNING_MAX_CHARS) -> str:
    """One line, at most `limit` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def warning_text(f: Finding, note: str = "") -> str:
    """`[rule-id] path: message` on one line, under WARNING_MAX_CHARS."""
    return short(f"[{f.rule}] {f.path}: {note}{f.message}")


def bounded_warnings(lines: Sequence[str], limit: int = WARNING_MAX_COUNT) -> tuple[str, ...]:
    if len(lines) <= limit:
        return tuple(lines)
    rest = len(lines) - (limit - 1)
    return tuple(lines[: limit - 1]) + (f"... and {rest} more; run `netpol-guard lint` for every finding",)


def denial_message(subject: str, errors: Sequence[Finding]) -> str:
    """Every error with rule id, field path and fix, laid out to read well after kubectl's
    `... denied the request: ` prefix."""
    noun = "error" if len(errors) == 1 else "errors"
    lines = [f"NetworkPolicy {clip(subject, NAME_MAX_CHARS)} has {len(errors)} {noun}:"]
    for f in errors[:DENIAL_MAX_ERRORS]:
        f = bounded_finding(f)
        lines.append(f"- [{f.rule}] {f.path}: {f.message}")
        if f.fix:
            lines.append("  fix:")
            lines.extend(f"    {line}" for line in f.fix.splitlines())
    if len(errors) > DENIAL_MAX_ERRORS:
        lines.append(f"... and {len(errors) - DENIAL_MAX_ERRORS} more errors; run `netpol-guard lint` "
                     "for every finding")
    return "\n".join(lines)


_CLEAN = Decision()  # immutable, so one instance serves every clean review


def decision_from_findings(subject: str, findings: Sequence[Finding], mode: str = "enforce",
                           kept: Sequence[Finding] = ()) -> Decision:
    """The decision for one object's findings.

    ``kept`` are errors the object already had before this change (UPDATE): they are
    reported as warnings, never a reason to deny. ``mode: warn`` turns every denial
    into warnings (safe rollout).
    """
    if not findings and not kept:
        return _CLEAN  # most reviews: nothing to say
    errors = [f for f in findings if f.severity == "error"]
    warns = [f for f in findings if f.severity == "warning"]
    lines = [warning_text(f, "(pre-existing) ") for f in kept]
    if errors and mode == "warn":
        lines = [warning_text(f, "(would deny) ") for f in errors] + lines
        errors = []
    lines += [warning_text(f) for f in warns]
    all_findings = tuple(findings) + tuple(kept)
    if errors:
        return deny(denial_message(subject, errors), all_findings, bounded_warnings(lines))
    return Decision(warnings=bounded_warnings(lines), findings=all_findings)


# --- the wire -------------------------------------------------------------------------

def build_response(request: AdmissionRequest, decision: Decision) -> dict[str, Any]:
    """The AdmissionReview answer: uid echoed, status 403 with the message on denial,
    warnings, and a base64 JSONPatch when there is one."""
    response: dict[str, Any] = {"uid": request.uid, "allowed": decision.allowed}
    if not decision.allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": decision.message}
    if decision.warnings:
        response["warnings"] = list(decision.warnings)
    if decision.patch and decision.allowed:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(
            json.dumps(list(decision.patch), separators=(",", ":")).encode()).decode()
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def kubectl_denial(decision: Decision, operation: str = "creating", file: str = "policy.yaml",
                   webhook: str = "networkpolicies.netpol-guard.io") -> str:
    """How kubectl prints a denial (for docs and tests)."""
    return (f'Error from server (Forbidden): error when {operation} "{file}": admission webhook '
            f'"{webhook}" denied the request: {decision.message}')


def kubectl_warnings(decision: Decision) -> str:
    return "\n".join(f"Warning: {w}" for w in decision.warnings)
