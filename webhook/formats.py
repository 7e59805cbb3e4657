"""Findings in the formats CI systems read: SARIF 2.1.0, GitHub workflow annotations, JUnit XML.

Every renderer takes the findings as `lint --format json` prints them (dicts with rule,
category, severity, policy, file, line, path, message, fix) and the summary, and nothing
of the command that produced them, so `lint` and `audit` share them. Pure: text in, text
out; the caller writes it.

A finding read from a live cluster (`audit`, `lint --kubeconfig`) has no file and line; it
is placed on the Kubernetes object instead: its `resource` ({apiVersion, kind, namespace,
name}) when the caller gives one, else the NetworkPolicy its `policy` names.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable, Mapping, Optional, Sequence
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

from webhook import __version__
from webhook.bounded_text import MESSAGE_MAX_CHARS, NAME_MAX_CHARS, escaped, shown, shown_path

FORMATS = ("sarif", "github", "junit")
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://github.com/netpol-guard/netpol-guard"
STDIN_URI = "stdin"  # SARIF needs a URI; "<stdin>" is not one

Finding = Mapping[str, Any]


def render(fmt: str, findings: Sequence[Finding], summary: Mapping[str, Any], *,
           checked: Optional[Sequence[tuple[str, Optional[str]]]] = None, tool: str = "netpol-guard lint",
           extra_rules: Sequence[Mapping[str, str]] = ()) -> str:
    """`checked`: every policy looked at as (NS/NAME, file), for JUnit's passing cases.
    `extra_rules`: results that are not registry rules (the audit's cluster-level ones), as
    {id, category, severity, summary, rationale, helpUri}, for SARIF's rule entries."""
    if fmt == "sarif":
        return sarif(findings, summary, extra_rules=extra_rules)
    if fmt == "github":
        return github(findings, summary)
    if fmt == "junit":
        return junit(findings, summary, checked=checked, suite=tool)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _one_line(f: Finding) -> str:
    # policy name and field path come from the input: escaped (a name may hold ESC or a newline)
    return (f"{shown(f['policy'], NAME_MAX_CHARS)} {shown(f['path'], NAME_MAX_CHARS)}: "
            f"{shown(f['message'], MESSAGE_MAX_CHARS)}")


def _fix(f: Finding) -> str:
    """The fix snippet: its lines kept, anything else that is not printable escaped."""
    return escaped(f["fix"], keep="\n")


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


def _extra_descriptor(rule: Mapping[str, str]) -> dict:
    """A rule entry for a result the registry does not hold (no examples to show)."""
    rationale = " ".join(rule["rationale"].split())
    return {
        "id": rule["id"],
        "name": "".join(part.capitalize() for part in rule["id"].split("-")),
        "shortDescription": {"text": rule["summary"]},
        "fullDescription": {"text": rationale},
        "help": {"text": f"{rule['id']}  ({rule['category']}, severity {rule['severity']})\n\n{rule['summary']}"
                         f"\n\n{rationale}\n", "markdown": f"**{rule['summary']}**\n\n{rationale}"},
        "helpUri": rule.get("helpUri") or INFORMATION_URI,
        "defaultConfiguration": {"level": _LEVEL[rule["severity"]]},
        "properties": {"category": rule["category"], "tags": ["kubernetes", "networkpolicy", rule["category"]]},
    }


# Resource paths of the kinds findings are placed on (the rest: kind in lower case + "s").
_PLURAL = {"NetworkPolicy": "networkpolicies"}


def resource_of(f: Finding) -> dict:
    """The Kubernetes object a finding without a file is about: its `resource`, else the
    NetworkPolicy its `policy` (NS/NAME) names."""
    if f.get("resource"):
        return dict(f["resource"])
    ns, _, name = str(f["policy"]).partition("/")
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "namespace": ns, "name": name}


def object_path(res: Mapping[str, Any]) -> str:
    """The object's path on the API server, without the leading slash (what `kubectl get
    --raw /<path>` reads): a relative URI reference, which SARIF allows and code scanning
    accepts as the alert's location (it refuses URI schemes)."""
    api = res.get("apiVersion") or "v1"
    parts = ["apis" if "/" in api else "api", api]
    if res.get("namespace"):
        parts += ["namespaces", res["namespace"]]
    parts += [_PLURAL.get(res["kind"], res["kind"].lower() + "s"), res["name"]]
    return quote("/".join(parts), safe="/:@-._~")


def object_name(res: Mapping[str, Any]) -> str:
    """NS/Kind/NAME, or Kind/NAME for a cluster-scoped object."""
    return "/".join(p for p in (res.get("namespace"), res["kind"], res["name"]) if p)


def _location(f: Finding) -> dict:
    """Where a result is: the file and line it came from, or the cluster object it is about."""
    field = {"name": f["path"], "fullyQualifiedName": f"{f['policy']}:{f['path']}", "kind": "object"}
    if f.get("file"):
        physical: dict[str, Any] = {"artifactLocation": {"uri": _uri(f.get("file"))}}
        if f.get("line"):
            physical["region"] = {"startLine": int(f["line"])}
        return {"physicalLocation": physical, "logicalLocations": [field]}
    res = resource_of(f)
    return {"physicalLocation": {"artifactLocation": {"uri": object_path(res)}},
            "logicalLocations": [{"name": res["name"], "fullyQualifiedName": object_name(res), "kind": "resource"},
                                 field]}


def _uri(file: Optional[str]) -> str:
    if not file or file == "<stdin>":
        return STDIN_URI
    path = file.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    # the name's own bytes, percent-encoded: a name that is not UTF-8 (surrogate-escaped by
    # os.fsdecode) is still the URI of that file
    return quote(os.fsencode(path), safe="/:@-._~")


def _fingerprint(f: Finding) -> str:
    # Stable while lines move: GitHub matches alerts across commits by this.
    key = "\0".join(str(f.get(k) or "") for k in ("rule", "policy", "path", "file"))
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]  # a file name as its bytes


def sarif(findings: Sequence[Finding], summary: Mapping[str, Any], rules: Optional[Iterable[Any]] = None,
          extra_rules: Sequence[Mapping[str, str]] = ()) -> str:
    """A SARIF 2.1.0 log: one rule entry per rule (with its help), one result per finding,
    each with the file and line it points at (GitHub code scanning shows them inline), or
    for a finding from a live cluster, the object's API path and a logical location
    naming it (NS/Kind/NAME)."""
    if rules is None:
        from webhook.rules.base import REGISTRY
        rules = REGISTRY
    descriptors = [_rule_descriptor(r) for r in rules] + [_extra_descriptor(r) for r in extra_rules]
    index = {d["id"]: i for i, d in enumerate(descriptors)}
    results = []
    for f in findings:
        text = _one_line(f)
        if f.get("fix"):
            text += "\nfix:\n" + _fix(f)
        result: dict[str, Any] = {
            "ruleId": f["rule"],
            "level": _LEVEL.get(f["severity"], "warning"),
            "message": {"text": text},
            "locations": [_location(f)],
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
            props.append(f"file={_escape_property(shown_path(f['file']))}")
            if f.get("line"):
                props.append(f"line={int(f['line'])}")
        title = f"netpol-guard [{f['rule']}] {shown(f['policy'], NAME_MAX_CHARS)}"
        props.append(f"title={_escape_property(title)}")
        text = _one_line(f) + (f"\nfix:\n{_fix(f)}" if f.get("fix") else "")
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
    """One test case per policy (classname: its file, or for a live cluster's policy its
    namespace). A policy with an error-level finding
    fails, as it fails `lint`; warnings and infos go to the case's output. Policies without
    findings are passing cases when `checked` lists them. Names and file names are shown
    escaped: XML 1.0 has no way to write most control characters, and one makes the whole
    report unreadable to a CI's parser."""
    cases: dict[tuple[str, str], list[Finding]] = {}
    for policy, file in checked or ():
        cases.setdefault((policy, file or ""), [])
    for f in findings:
        cases.setdefault((f["policy"], f.get("file") or ""), []).append(f)
    body, failures = [], 0
    for (policy, file), fs in cases.items():
        errors = [f for f in fs if f["severity"] == "error"]
        detail = "\n".join(_finding_text(f) for f in fs)
        classname = shown_path(file) if file else shown(policy.partition("/")[0], NAME_MAX_CHARS) or "netpol-guard"
        attrs = f"name={quoteattr(shown(policy, NAME_MAX_CHARS))} classname={quoteattr(classname)}"
        if fs and fs[0].get("file") and fs[0].get("line"):
            attrs += f" file={quoteattr(shown_path(fs[0]['file']))} line=\"{int(fs[0]['line'])}\""
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
    where = (shown_path(f["file"]) + (f":{f['line']}" if f.get("line") else "")) if f.get("file") \
        else shown(object_name(resource_of(f)), NAME_MAX_CHARS)  # from a live cluster
    text = f"{where}: {f['severity']} [{f['rule']}] {_one_line(f)}"
    return text + (f"\n  fix:\n{_fix(f)}" if f.get("fix") else "")
