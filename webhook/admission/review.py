"""AdmissionReview v1 as the API server sends it: typed parsing with precise 400 reasons.

Everything that the API server would never send is a ``BadReview`` (HTTP 400, a JSON
body saying what is wrong). A NetworkPolicy that is well-formed on the wire but invalid
as a NetworkPolicy is *not* a BadReview: it is judged by the rules and denied with
reasons (invalid-spec).
"""
from __future__ import annotations

import json
from dataclasses import field
from collections.abc import Mapping  # not typing.Mapping: isinstance() against the alias costs twice as much
from typing import Any, Literal, Optional

from webhook import safeload
from webhook.bounded_text import quoted
from webhook.policy.errors import frozen_record

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
JSON_TYPES = ("application/json",)
# A decoded body is made of plain dicts: naming dict first answers isinstance() without the
# ABC machinery (~6x cheaper); any other Mapping is still accepted.
MAPPING = (dict, Mapping)


class BadReview(ValueError):
    """A request the API server would never send. ``reason`` is a stable kebab-case code;
    ``uid`` is echoed when it could be read."""

    def __init__(self, reason: str, message: str, uid: str = "", status: int = 400):
        super().__init__(message)
        self.reason, self.message, self.uid, self.status = reason, message, uid, status

    def body(self) -> dict[str, Any]:
        # Shaped as an AdmissionReview too (uid and version echoed, as controller-runtime
        # does), so a caller that only reads `response` still sees what went wrong.
        return {"apiVersion": API_VERSION, "kind": KIND,
                "error": {"reason": self.reason, "message": self.message},
                "response": {"uid": self.uid, "allowed": False,
                             "status": {"code": self.status, "message": self.message}}}


@frozen_record
class GroupVersionKind:
    group: str
    version: str
    kind: str

    def __str__(self) -> str:
        return f"{self.group + '/' if self.group else ''}{self.version}/{self.kind}"


@frozen_record
class UserInfo:
    username: str = ""
    groups: tuple[str, ...] = ()


@frozen_record
class AdmissionRequest:
    uid: str
    kind: GroupVersionKind
    operation: Operation
    namespace: str
    name: str
    user: UserInfo
    dry_run: bool
    object: Optional[Mapping[str, Any]]
    old_object: Optional[Mapping[str, Any]]
    sub_resource: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def object_ref(self) -> str:
        """namespace/name as the audit log prints it (generateName prefix when unnamed)."""
        name = self.name
        if not name:
            for obj in (self.object, self.old_object):
                meta = obj.get("metadata") if isinstance(obj, MAPPING) else None
                if isinstance(meta, MAPPING):
                    name = str(meta.get("name") or meta.get("generateName") or "")
                    if name:
                        break
        return f"{self.namespace}/{name}" if self.namespace else name


def check_content_type(content_type: Optional[str]) -> None:
    """The API server always sends application/json (possibly with a charset)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in JSON_TYPES:
        raise BadReview("wrong-content-type",
                        f"Content-Type must be application/json, got {quoted(content_type or 'none')}")


def _kind_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def decode(body: bytes) -> Any:
    if not body:
        raise BadReview("empty-body", "the request body is empty; expected an AdmissionReview")
    try:
        return safeload.load_json(body)
    except UnicodeDecodeError:
        raise BadReview("not-json", "the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise BadReview("not-json", f"the request body is not JSON: {exc.msg} at line {exc.lineno} "
                                    f"column {exc.colno}") from None
    except safeload.UnsafeInput as exc:
        # an integer of more than 4,300 digits, or nesting past the JSON parser's guard
        raise BadReview("unreadable-json", f"the request body cannot be read: {exc.message}") from None


def _string(req: Mapping[str, Any], key: str, uid: str, required: bool = False) -> str:
    value = req.get(key)
    if value is None:
        if required:
            raise BadReview(f"missing-{key.lower()}", f"request.{key} is required", uid)
        return ""
    if not isinstance(value, str):
        raise BadReview("bad-field", f"request.{key} must be a string, got {_kind_name(value)}", uid)
    return value


def _gvk(req: Mapping[str, Any], uid: str) -> GroupVersionKind:
    raw = req.get("kind")
    if not isinstance(raw, MAPPING):
        raise BadReview("missing-kind", "request.kind must be an object with group, version and kind "
                                        f"(got {_kind_name(raw)})", uid)
    parts = []
    for key in ("group", "version", "kind"):
        v = raw.get(key, "" if key == "group" else None)
        if not isinstance(v, str) or (key != "group" and not v):
            raise BadReview("missing-kind", f"request.kind.{key} must be a{' non-empty' if key != 'group' else ''}"
                                            f" string, got {_kind_name(v)}", uid)
        parts.append(v)
    return GroupVersionKind(*parts)


def _user(req: Mapping[str, Any], uid: str) -> UserInfo:
    raw = req.get("userInfo")
    if raw is None:
        return UserInfo()
    if not isinstance(raw, MAPPING):
        raise BadReview("bad-field", f"request.userInfo must be an object, got {_kind_name(raw)}", uid)
    username = raw.get("username", "")
    groups = raw.get("groups") or []
    if not isinstance(username, str):
        raise BadReview("bad-field", f"request.userInfo.username must be a string, got {_kind_name(username)}", uid)
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise BadReview("bad-field", "request.userInfo.groups must be a list of strings", uid)
    return UserInfo(username, tuple(groups))


def _object_shape(obj: Mapping[str, Any], where: str, gvk: GroupVersionKind, uid: str) -> None:
    """What the API server's decoding guarantees about any object it sends us.

    Only wire shape is checked here; values (a lower-case protocol, a bad CIDR) are the
    rules' business and become a denial with reasons.
    """
    api_version = f"{gvk.group}/{gvk.version}" if gvk.group else gvk.version
    if obj.get("kind") != gvk.kind or obj.get("apiVersion") != api_version:
        raise BadReview("object-kind-mismatch",
                        f"request.{where} is {quoted(obj.get('apiVersion'))}/{quoted(obj.get('kind'))} but "
                        f"request.kind says {quoted(api_version + '/' + gvk.kind)}", uid)
    meta = obj.get("metadata")
    if not isinstance(meta, MAPPING):
        raise BadReview("bad-object", f"request.{where}.metadata must be an object, got {_kind_name(meta)}", uid)
    for key in ("name", "namespace", "generateName"):
        if key in meta and not isinstance(meta[key], (str, type(None))):
            raise BadReview("bad-object", f"request.{where}.metadata.{key} must be a string", uid)
    for key in ("labels", "annotations"):
        if meta.get(key) is not None and not isinstance(meta[key], MAPPING):
            raise BadReview("bad-object", f"request.{where}.metadata.{key} must be an object", uid)
    if gvk == NETWORK_POLICY:
        spec = obj.get("spec")
        if spec is not None and not isinstance(spec, MAPPING):
            raise BadReview("bad-object", f"request.{where}.spec must be an object, got {_kind_name(spec)}", uid)
        for key in ("ingress", "egress", "policyTypes"):
            value = (spec or {}).get(key)
            if value is not None and not isinstance(value, list):
                raise BadReview("bad-object",
                                f"request.{where}.spec.{key} must be a list, got {_kind_name(value)}", uid)
        selector = (spec or {}).get("podSelector")
        if selector is not None and not isinstance(selector, MAPPING):
            raise BadReview("bad-object", f"request.{where}.spec.podSelector must be an object, "
                                          f"got {_kind_name(selector)}", uid)


NETWORK_POLICY = GroupVersionKind("networking.k8s.io", "v1", "NetworkPolicy")


def parse_review(data: Any) -> AdmissionRequest:
    """A decoded JSON value -> AdmissionRequest, or BadReview naming the first problem."""
    if not isinstance(data, MAPPING):
        raise BadReview("not-admission-review", f"expected an AdmissionReview object, got {_kind_name(data)}")
    req = data.get("request")
    uid = ""
    if isinstance(req, MAPPING) and isinstance(req.get("uid"), str):
        uid = req["uid"]
    if "apiVersion" not in data and "kind" not in data:
        raise BadReview("not-admission-review", "the body is not an AdmissionReview "
                                                "(no apiVersion and kind)", uid)
    if data.get("kind") != KIND:
        raise BadReview("wrong-kind", f"kind must be {KIND!r}, got {quoted(data.get('kind'))}", uid)
    if data.get("apiVersion") != API_VERSION:
        raise BadReview("wrong-api-version", f"apiVersion must be {API_VERSION!r} (configure the webhook with "
                                             f"admissionReviewVersions: [v1]), got {quoted(data.get('apiVersion'))}", uid)
    if req is None:
        raise BadReview("missing-request", "request is required", uid)
    if not isinstance(req, MAPPING):
        raise BadReview("missing-request", f"request must be an object, got {_kind_name(req)}", uid)
    if "uid" not in req or req.get("uid") in (None, ""):
        raise BadReview("missing-uid", "request.uid is required (it is echoed in the response)")
    if not isinstance(req["uid"], str):
        raise BadReview("missing-uid", f"request.uid must be a string, got {_kind_name(req['uid'])}")
    gvk = _gvk(req, uid)
    operation = _string(req, "operation", uid, required=True)
    if operation not in OPERATIONS:
        raise BadReview("bad-operation", f"request.operation must be one of {', '.join(OPERATIONS)}, "
                                         f"got {quoted(operation)}", uid)
    dry_run = req.get("dryRun", False)
    if dry_run is None:
        dry_run = False
    if not isinstance(dry_run, bool):
        raise BadReview("bad-field", f"request.dryRun must be a boolean, got {_kind_name(dry_run)}", uid)

    obj, old = req.get("object"), req.get("oldObject")
    if operation in ("CREATE", "UPDATE"):
        if obj is None:
            raise BadReview("missing-object", f"request.object is required for {operation}", uid)
        if not isinstance(obj, MAPPING):
            raise BadReview("missing-object", f"request.object must be an object, got {_kind_name(obj)}", uid)
    elif obj is not None and not isinstance(obj, MAPPING):
        raise BadReview("missing-object", f"request.object must be an object or null, got {_kind_name(obj)}", uid)
    if operation == "UPDATE" and not isinstance(old, MAPPING):
        raise BadReview("missing-old-object", f"request.oldObject must be an object for UPDATE, "
                                              f"got {_kind_name(old)}", uid)
    if old is not None and not isinstance(old, MAPPING):
        raise BadReview("missing-old-object", f"request.oldObject must be an object or null, "
                                              f"got {_kind_name(old)}", uid)
    # CONNECT's object is an options object of another kind; only check resources.
    if operation != "CONNECT" and not _string(req, "subResource", uid):
        for where, o in (("object", obj), ("oldObject", old)):
            if o is not None:
                _object_shape(o, where, gvk, uid)

    return AdmissionRequest(
        uid=uid, kind=gvk, operation=operation,  # type: ignore[arg-type]
        namespace=_string(req, "namespace", uid), name=_string(req, "name", uid),
        user=_user(req, uid), dry_run=dry_run, object=obj, old_object=old,
        sub_resource=_string(req, "subResource", uid), raw=req,
    )
