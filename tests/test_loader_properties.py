"""Property: whatever text or bytes a loader is given, it either returns data or raises
the project's own clear error - InputError (manifests, snapshots), MapError (maps),
ConfigError (configuration), BadReview (the AdmissionReview body) - never anything else.

The text is built from pieces of YAML and JSON syntax (anchors, aliases, merge keys,
tags, flow and block collections, odd digits) so that most examples get past the
scanner and reach the constructors and walkers where the old crashes were.
"""
from __future__ import annotations

import json
import re

import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from webhook.admission.review import BadReview, decode, parse_review
from webhook.cluster.files import InputError, parse_text
from webhook.config import ConfigError, load
from webhook.generate.mapparse import MapError, parse_map

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

PIECES = ["\n", "\n  ", "\n- ", "- ", ": ", ", ", "{", "}", "[", "]", "&a ", "&b ", "*a", "*b", "<<: ", "!!int ",
          "!!bool ", "!!float ", "!!str ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!!map ", "!!seq ",
          "!!null ", "!custom ", "? ", "---\n", "...\n", "'", '"', "#", "|\n  ", ">\n  ", "%YAML 1.1\n",
          "0x1F", "0o17", "017", "1_000", "1e400", ".inf", ".nan", "²", "٣", "9" * 4400, "-", "+", "~", "null",
          "yes", "maybe", "2020-13-45", "2020-01-01T00:00:00Z", "a", "b", "x", "apiVersion", "kind", "v1",
          "networking.k8s.io/v1", "NetworkPolicy", "Namespace", "Pod", "List", "items", "metadata", "name",
          "namespace", "labels", "spec", "podSelector", "matchLabels", "ingress", "egress", "from", "to", "ports",
          "port", "protocol", "namespaces", "workloads", "flows", "dns", "mode", "warn", "rules", "server",
          "maxRequestBytes", "exemptNamespaces", "\t", "\x00", "\ufeff", "\\u00e9", "é", "😀"]
yamlish = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)

# Well-formed flow-style YAML documents with anchors, aliases, merge keys and tags in
# random places: these get past the scanner to the constructors and the walkers.
TAGS = ["", "", "", "!!int ", "!!bool ", "!!float ", "!!str ", "!!timestamp ", "!!binary ", "!!null ", "!x "]
VALUES = ["a", "53", "TCP", "UDP", "''", "~", "true", "0", "017", "0x1F", "1_0", "1e400", ".nan", "²", "٣",
          "9" * 4400, "maybe", "2020-13-45", "2020-01-01", "10.0.0.0/8", "0.0.0.0/0", "kube-system", "Ingress"]
KEYS = ["apiVersion", "kind", "metadata", "name", "namespace", "labels", "spec", "podSelector", "matchLabels",
        "ingress", "egress", "from", "to", "ports", "port", "protocol", "ipBlock", "cidr", "items", "policyTypes",
        "namespaces", "workloads", "flows", "endpoints", "dns", "mode", "rules", "server", "isolation", "a", "b"]


@st.composite
def flow_node(draw, depth: int = 0) -> str:
    choice = draw(st.integers(0, 9 if depth < 4 else 3))
    if choice <= 2:
        return draw(st.sampled_from(TAGS)) + draw(st.sampled_from(VALUES))
    if choice == 3:
        return draw(st.sampled_from(["*a", "*b"]))
    anchor = draw(st.sampled_from(["", "", "&a ", "&b "]))
    if choice <= 6:
        items = draw(st.lists(flow_node(depth + 1), max_size=4))
        return f"{anchor}[{', '.join(items)}]"
    pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS + ["<<"]), flow_node(depth + 1)), max_size=5))
    return anchor + "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"


@st.composite
def flow_document(draw) -> str:
    head = draw(st.sampled_from(["", "apiVersion: v1\nkind: Pod\n", "apiVersion: v1\nkind: List\n",
                                 "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"]))
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=5, unique=True))
    return _link_anchors(head + "".join(f"{k}: {draw(flow_node())}\n" for k in keys))


def _link_anchors(text: str) -> str:
    """Give every anchor its own name and point every alias at the first anchor or the
    latest one before it (which may contain it: a recursive structure), so that few
    documents fail on an undefined alias or a repeated anchor."""
    out, defined = [], 0
    for part in re.split(r"(&[ab] |\*[ab])", text):
        if part in ("&a ", "&b "):
            defined += 1
            out.append(f"&n{defined} ")
        elif part in ("*a", "*b"):
            out.append(f"*n{1 if part == '*a' else defined}" if defined else "x")
        else:
            out.append(part)
    return "".join(out)


texts = st.one_of(flow_document(), yamlish, st.text(max_size=200))

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=20)
WELL_FORMED_MANIFEST = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: shop}\n"
                        "spec:\n  podSelector: {}\n")


@PROPERTY
@given(text=texts, name=st.sampled_from(["m.yaml", "m.json"]))
@example(text="a: &a [*a]\n", name="m.yaml")
@example(text="data: !!int ²\n", name="m.yaml")
@example(text="kind: List\napiVersion: v1\nitems: &i [{kind: List, apiVersion: v1, items: *i}]\n", name="m.yaml")
@example(text="[" * 5000, name="m.json")
def test_manifest_text_gives_documents_or_an_input_error(text, name):
    try:
        docs = parse_text(text, name)
    except InputError as exc:
        assert exc.file == name and str(exc).startswith(name)
    else:
        assert all(isinstance(d.obj, dict) and d.kind for d in docs)


@PROPERTY
@given(value=json_values)
def test_manifest_json_gives_documents_or_an_input_error(value):
    for doc in (value, {"apiVersion": "v1", "kind": "List", "items": [value]},
                {"apiVersion": "v1", "kind": "Pod", "metadata": value}):
        try:
            parse_text(json.dumps(doc), "m.json")
        except InputError:
            pass


@PROPERTY
@given(text=texts)
@example(text="namespaces: &a [*a]\n")
@example(text="namespaces: [{name: !!int ²}]\n")
def test_map_text_gives_a_map_or_a_map_error(text):
    try:
        parse_map(text, "map.yaml")
    except MapError as exc:
        assert exc.problems and all(line.startswith("map.yaml") for line in exc.lines())


@PROPERTY
@given(text=texts)
@example(text="mode: !!int ²\n")
@example(text="rules: &r {a: *r}\n")
def test_config_text_gives_a_config_or_a_config_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("config") / "config.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load(str(path), env={})
    except ConfigError as exc:
        assert exc.problems and str(exc).startswith(str(path))


@PROPERTY
@given(raw=st.one_of(st.binary(max_size=300), texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
                     json_values.map(lambda v: json.dumps(v).encode())))
@example(raw=b'{"request": {"uid": 1' + b"0" * 5000 + b"}}")
@example(raw=b"[" * 100_000)
def test_review_body_gives_a_request_or_a_bad_review(raw):
    try:
        parse_review(decode(raw))
    except BadReview as exc:
        assert exc.status == 400 and exc.reason and exc.message
        assert len(exc.message) < 1000
        json.dumps(exc.body())


def test_the_well_formed_inputs_still_load(tmp_path):
    """The property tests are not passing because everything is refused."""
    assert [d.kind for d in parse_text(WELL_FORMED_MANIFEST, "p.yaml")] == ["NetworkPolicy"]
    assert [d.kind for d in parse_text(json.dumps(yaml.safe_load(WELL_FORMED_MANIFEST)), "p.json")] == ["NetworkPolicy"]
    (tmp_path / "c.yaml").write_text("mode: warn\n")
    assert load(str(tmp_path / "c.yaml"), env={}).mode == "warn"
    assert parse_map("namespaces: [{name: shop}]\n", "map.yaml") is not None


def test_body_reasons_for_plain_bad_json_are_unchanged():
    """Only the new failure modes get the new reason; bytes that are not UTF-8 JSON, or
    not JSON at all, keep `not-json` (what docs/operations.md lists)."""
    for raw in (b"\xff\xfe{", b'{"a": \xff}', b"{not json"):
        try:
            decode(raw)
        except BadReview as exc:
            assert exc.reason == "not-json", (raw, exc.reason)
        else:
            raise AssertionError(raw)
