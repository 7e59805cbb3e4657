"""Findings in the formats CI systems read: SARIF 2.1.0, GitHub workflow annotations, JUnit XML.

Every renderer takes the findings as `lint --format json` prints them (dicts with rule,
category, severity, policy, file, line, path, message, fix) and the summary, and nothing
of the command that produced them, so `lint` and `audit` share them. Pure: text in, text
out; the caller writes it.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from webhook import __version__

FORMATS = ("sarif", "github", "junit")
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://github.com/netpol-guard/netpol-guard"
STDIN_URI = "stdin"  # SARIF needs a URI; "<stdin>" is not one

Finding = Mapping[str, Any]


def render(fmt: str, findings: Sequence[Finding], summary: Mapping[str, Any], *,
           checked: Optional[Sequence[tuple[str, Optional[str]]]] = None, tool: str = "netpol-guard lint") -> str:
    """`checked`: every policy looked at as (NS/NAME, file), for JUnit's passing cases."""
    if fmt == "sarif":
        return sarif(findings, summary)
    if fmt == "github":
        return github(findings, summary)
    if fmt == "junit":
        return junit(findings, summary, checked=checked, suite=tool)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _one_line(f: Finding) -> str:
    return f"{f['policy']} {f['path']}: {f['message']}"


# --- SARIF 2.1.0 -----------------------------------------------------------------------------

_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def _rule_descriptor(rule: Any) -> dict:
    from webhook.rules.docs import explain
    help_text = explain(rule)
    return {
        "id": rule.id,
        "name": "".join(part.capitalize() for part in rule.id.split("-")),
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": " ".join(rule.rationale.split())},
        "help": {"text": help_text, "markdown": f"**{rule.summary}**\n\n{rule.rationale}\n\n"
                 f"See `netpol-guard rules --explain {rule.id}` or docs/rules.md#{rule.id}."},
        "helpUri": f"{INFORMATION_URI}/blob/main/docs/rules.md#{rule.id}",
        "defaultConfiguration": {"level": _LEVEL[rule.severity]},
        "properties": {"category": rule.category, "tags": ["kubernetes", "networkpolicy", rule.category]},
    }


def _uri(file: Optional[str]) -> str:
    if not file or file == "<stdin>":
        return STDIN_URI
    path = file.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return quote(path, safe="/:@-._~")


def _fingerprint(f: Finding) -> str:
    # Stable while lines move: GitHub matches alerts across commits by this.
    key = "\0".join(str(f.get(k) or "") for k in ("rule", "policy", "path", "file"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def sarif(findings: Sequence[Finding], summary: Mapping[str, Any], rules: Optional[Iterable[Any]] = None) -> str:
    """A SARIF 2.1.0 log: one rule entry per rule (with its help), one result per finding,
    each with the file and line it points at (GitHub code scanning shows them inline)."""
    if rules is None:
        from webhook.rules.base import REGISTRY
        rules = REGISTRY
    descriptors = [_rule_descriptor(r) for r in rules]
    index = {d["id"]: i for i, d in enumerate(descriptors)}
    results = []
    for f in findings:
        text = _one_line(f)
        if f.get("fix"):
            text += "\nfix:\n" + f["fix"]
        region = {"startLine": int(f["line"])} if f.get("line") else None
        physical: dict[str, Any] = {"artifactLocation": {"uri": _uri(f.get("file"))}}
        if region:
            physical["region"] = region
        result: dict[str, Any] = {
            "ruleId": f["rule"],
            "level": _LEVEL.get(f["severity"], "warning"),
            "message": {"text": text},
            "locations": [{
                "physicalLocation": physical,
                "logicalLocations": [{"name": f["path"], "fullyQualifiedName": f"{f['policy']}:{f['path']}",
                                      "kind": "object"}],
            }],
            "partialFingerprints": {"netpolGuardFinding/v1": _fingerprint(f)},
            "properties": {"policy": f["policy"], "path": f["path"], "category": f.get("category"),
                           "severity": f["severity"]},
        }
        if f["rule"] in index:
            result["ruleIndex"] = index[f["rule"]]
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "netpol-guard", "version": __version__, "semanticVersion": __version__,
                                "informationUri": INFORMATION_URI, "rules": descriptors}},
            "results": results,
            "invocations": [{"executionSuccessful": True,
                             "properties": {"summary": dict(summary)}}],
            "columnKind": "unicodeCodePoints",
        }],
    }
    return json.dumps(log, indent=2) + "\n"


# --- GitHub workflow commands ----------------------------------------------------------------

_COMMAND = {"error": "error", "warning": "warning", "info": "notice"}


def _escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def github(findings: Sequence[Finding], summary: Mapping[str, Any]) -> str:
    """`::error file=F,line=L,title=T::message` lines: GitHub Actions shows each on the file
    and line in the pull request; the summary line after them is plain log text."""
    out = []
    for f in findings:
        props = []
        if f.get("file") and f["file"] != "<stdin>":
            props.append(f"file={_escape_property(f['file'])}")
            if f.get("line"):
                props.append(f"line={int(f['line'])}")
        title = f"netpol-guard [{f['rule']}] {f['policy']}"
        props.append(f"title={_escape_property(title)}")
        text = _one_line(f) + (f"\nfix:\n{f['fix']}" if f.get("fix") else "")
        out.append(f"::{_COMMAND.get(f['severity'], 'warning')} {','.join(props)}::{_escape_data(text)}")
    out.append(_summary_line(summary))
    return "\n".join(out) + "\n"


def _summary_line(summary: Mapping[str, Any]) -> str:
    def n(k: str, one: str) -> str:
        v = int(summary.get(k, 0))
        return f"{v} {one if v == 1 else one + 's'}"
    policies = int(summary.get("policies", 0))
    return (f"netpol-guard: checked {policies} NetworkPolic{'y' if policies == 1 else 'ies'}: "
            f"{n('errors', 'error')}, {n('warnings', 'warning')}, {n('infos', 'info')}")


# --- JUnit XML -------------------------------------------------------------------------------

def junit(findings: Sequence[Finding], summary: Mapping[str, Any], *,
          checked: Optional[Sequence[tuple[str, Optional[str]]]] = None, suite: str = "netpol-guard lint") -> str:
    """One test case per policy (classname: its file). A policy with an error-level finding
    fails, as it fails `lint`; warnings and infos go to the case's output. Policies without
    findings are passing cases when `checked` lists them."""
    cases: dict[tuple[str, str], list[Finding]] = {}
    for policy, file in checked or ():
        cases.setdefault((policy, file or ""), [])
    for f in findings:
        cases.setdefault((f["policy"], f.get("file") or ""), []).append(f)
    body, failures = [], 0
    for (policy, file), fs in cases.items():
        errors = [f for f in fs if f["severity"] == "error"]
        detail = "\n".join(_finding_text(f) for f in fs)
        attrs = f"name={quoteattr(policy)} classname={quoteattr(file or 'netpol-guard')}"
        if fs and fs[0].get("file") and fs[0].get("line"):
            attrs += f" file={quoteattr(fs[0]['file'])} line=\"{int(fs[0]['line'])}\""
        inner = ""
        if errors:
            failures += 1
            rules = ", ".join(sorted({f["rule"] for f in errors}))
            message = f"{len(errors)} error{'s' if len(errors) != 1 else ''}: {rules}"
            inner += f"<failure message={quoteattr(message)} type={quoteattr(errors[0]['rule'])}>" \
                     f"{escape(detail)}</failure>"
        elif fs:
            inner += f"<system-out>{escape(detail)}</system-out>"
        body.append(f"    <testcase {attrs}>{inner}</testcase>" if inner else f"    <testcase {attrs}/>")
    tests = len(cases)
    head = (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<testsuites name="netpol-guard" tests="{tests}" failures="{failures}" errors="0">\n'
            f'  <testsuite name={quoteattr(suite)} tests="{tests}" failures="{failures}" errors="0" skipped="0">\n'
            f'    <properties><property name="summary" value={quoteattr(_summary_line(summary))}/></properties>\n')
    return head + "\n".join(body) + ("\n" if body else "") + "  </testsuite>\n</testsuites>\n"


def _finding_text(f: Finding) -> str:
    where = f"{f.get('file') or '<input>'}" + (f":{f['line']}" if f.get("line") else "")
    text = f"{where}: {f['severity']} [{f['rule']}] {_one_line(f)}"
    return text + (f"\n  fix:\n{f['fix']}" if f.get("fix") else "")
