"""The one typed configuration, read from YAML with environment overrides.

Unknown keys are an error, never ignored: a misspelt `gatePods` that silently stays
off is exactly the kind of mistake this tool exists to catch in others.

Environment overrides: every scalar or list leaf has a variable named
``NETPOL_GUARD_`` + the upper-cased key path joined by ``_`` (``mode`` ->
``NETPOL_GUARD_MODE``, ``isolation.gatePods`` -> ``NETPOL_GUARD_ISOLATION_GATEPODS``).
Lists are comma-separated. ``NETPOL_GUARD_CONFIG`` names the file. An unknown
``NETPOL_GUARD_*`` variable is an error too.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from webhook import safeload
from webhook.bounded_text import MESSAGE_MAX_CHARS, shown, shown_path

SEVERITIES = ("error", "warning", "info")
SEVERITY_OVERRIDES = SEVERITIES + ("off",)
ISOLATE_LABEL = "netpol-guard.io/isolate"
IGNORE_LABEL = "netpol-guard.io/ignore"
ENV_PREFIX = "NETPOL_GUARD_"
ENV_FILE = "NETPOL_GUARD_CONFIG"


class ConfigError(ValueError):
    """Every problem found in a configuration, one per line, each naming its key."""

    def __init__(self, problems: list[str], source: str = "configuration"):
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))

    def __str__(self) -> str:
        # shown: a problem quotes the file (an unknown key of a megabyte is shown by its start, a
        # newline in a key does not start a line of its own)
        return "\n".join(f"{shown_path(self.source)}: {shown(p, MESSAGE_MAX_CHARS)}" for p in self.problems)


@dataclass(frozen=True)
class DNSConfig:
    namespace: str = "kube-system"
    podLabels: Mapping[str, str] = field(default_factory=lambda: {"k8s-app": "kube-dns"})
    # node-local DNS cache addresses (e.g. 169.254.20.10): an ipBlock containing one counts
    nodeLocalAddresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterConfig:
    podCIDRs: tuple[str, ...] = ()
    serviceCIDRs: tuple[str, ...] = ()
    # Off by default: most CNIs do not apply ipBlock to pod traffic reliably.
    ipBlockMatchesPods: bool = False


@dataclass(frozen=True)
class IsolationConfig:
    labelKey: str = ISOLATE_LABEL
    onLabelRemoved: str = "delete"  # delete | keep
    gatePods: bool = False
    # identities allowed to write managed policies (the controller's service account)
    controllerUsers: tuple[str, ...] = ("system:serviceaccount:netpol-guard:netpol-guard",)
    resyncSeconds: int = 300


@dataclass(frozen=True)
class NamespaceLabelsConfig:
    """Who may add, change or remove the labels that switch netpol-guard off or on for a
    namespace (netpol-guard.io/ignore and the isolate label). Without this, anyone allowed
    to label a namespace could exempt it from every check."""

    allowedUsers: tuple[str, ...] = ()
    # system:masters: the cluster's own administrators (kubeadm admin.conf before 1.29)
    allowedGroups: tuple[str, ...] = ("system:masters",)
    # The emergency group: requests from it never reach the webhook (matchConditions, on API
    # servers that have them) and are allowed in-process otherwise. Nobody is in it until an
    # administrator impersonates it (kubectl --as=$USER --as-group=GROUP). Empty: none.
    breakGlassGroup: str = "netpol-guard:break-glass"

    def allows(self, username: str, groups) -> bool:
        if username and username in self.allowedUsers:
            return True
        return any(g in self.allowedGroups or (self.breakGlassGroup and g == self.breakGlassGroup)
                   for g in groups)


@dataclass(frozen=True)
class MutationsConfig:
    addDnsEgress: bool = False
    explicitPolicyTypes: bool = False
    exceptMetadataAddress: bool = False

    def any_enabled(self) -> bool:
        return self.addDnsEgress or self.explicitPolicyTypes or self.exceptMetadataAddress


@dataclass(frozen=True)
class CertificatesConfig:
    """In-cluster, self-managed serving certificates (the chart's default mode)."""

    # The elected leader creates the CA and serving certificate in `secretName`, writes the
    # CA bundle into the webhook configurations, and rotates before expiry.
    selfManaged: bool = False
    secretName: str = "netpol-guard-tls"
    serviceName: str = "netpol-guard"
    # Name of both our ValidatingWebhookConfiguration and MutatingWebhookConfiguration.
    webhookConfigName: str = "netpol-guard"
    validityDays: int = 365
    caValidityDays: int = 3650
    renewBeforeDays: int = 30


@dataclass(frozen=True)
class LeaderElectionConfig:
    """The Lease that makes exactly one replica the writer (controller, certificates)."""

    leaseName: str = "netpol-guard-leader"
    leaseDurationSeconds: int = 15
    renewDeadlineSeconds: int = 10
    retryPeriodSeconds: int = 2


@dataclass(frozen=True)
class ServerConfig:
    maxRequestBytes: int = 3 * 1024 * 1024
    # how often the live cache re-lists from scratch, seconds (0: only on 410 Gone)
    relistSeconds: int = 0


@dataclass(frozen=True)
class AuditConfig:
    """The background audit in the pod agent (leader only): PolicyReports, Events, metrics."""

    enabled: bool = False
    debounceMilliseconds: int = 1000  # quiet time after a change before the affected policies are re-checked
    maxDelayMilliseconds: int = 5000  # ...but never longer than this after the first change of a burst
    fullSeconds: int = 600  # a full re-check of every policy this often (the safety net)
    events: bool = True  # an Event on the NetworkPolicy when a finding appears or clears
    maxEventsPerPass: int = 100
    # A ClusterRole the reports are owned by (ownerReferences): when it is deleted (helm uninstall
    # deletes the chart's), the garbage collector deletes the reports. Empty: reports have no owner.
    ownerClusterRole: str = ""


@dataclass(frozen=True)
class Config:
    mode: str = "enforce"  # enforce | warn
    rules: Mapping[str, str] = field(default_factory=dict)  # rule id -> severity or "off"
    exemptNamespaces: tuple[str, ...] = ()
    exemptUsers: tuple[str, ...] = ()
    exemptGroups: tuple[str, ...] = ()
    dns: DNSConfig = field(default_factory=DNSConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    isolation: IsolationConfig = field(default_factory=IsolationConfig)
    namespaceLabels: NamespaceLabelsConfig = field(default_factory=NamespaceLabelsConfig)
    mutations: MutationsConfig = field(default_factory=MutationsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    certificates: CertificatesConfig = field(default_factory=CertificatesConfig)
    leaderElection: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def severity_for(self, rule_id: str, default: str) -> str:
        """The configured severity of a rule, or 'off'."""
        return self.rules.get(rule_id, default)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


# --- validation -------------------------------------------------------------------------

def _check_bool(path: str, v: Any, problems: list[str]) -> bool:
    if isinstance(v, bool):
        return v
    problems.append(f"{path}: must be true or false, got {v!r}")
    return False


def _check_str_list(path: str, v: Any, problems: list[str]) -> tuple[str, ...]:
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    problems.append(f"{path}: must be a list of strings, got {v!r}")
    return ()


def _check_cidrs(path: str, values: tuple[str, ...], problems: list[str], addresses: bool = False) -> None:
    for i, v in enumerate(values):
        try:
            if addresses:
                ipaddress.ip_address(v)
            else:
                ipaddress.ip_network(v, strict=False)
        except ValueError:
            kind = "an IP address" if addresses else "a CIDR"
            problems.append(f"{path}[{i}]: {v!r} is not {kind}")


def _build(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    """Build a config dataclass from a mapping, reporting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problems.append(f"{path or 'top level'}: must be a mapping, got {type(data).__name__}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{where}: unknown key (known keys here: {known})")
            continue
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            kwargs[key] = _build(type(default), value, where, problems)
        elif isinstance(default, bool):
            kwargs[key] = _check_bool(where, value, problems)
        elif isinstance(default, int):
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                kwargs[key] = value
            else:
                problems.append(f"{where}: must be a non-negative integer, got {value!r}")
        elif isinstance(default, str):
            if isinstance(value, str):
                kwargs[key] = value
            else:
                problems.append(f"{where}: must be a string, got {value!r}")
        elif isinstance(default, tuple):
            kwargs[key] = _check_str_list(where, value, problems)
        elif isinstance(default, Mapping):
            if isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                kwargs[key] = dict(value)
            else:
                problems.append(f"{where}: must be a mapping of strings to strings, got {value!r}")
    return cls(**kwargs)


def _validate(cfg: Config, problems: list[str]) -> None:
    from webhook.policy.selectors import label_key_problem, label_value_problem

    if cfg.mode not in ("enforce", "warn"):
        problems.append(f"mode: must be 'enforce' or 'warn', got {cfg.mode!r}")
    try:
        from webhook.rules import registry
        known_rules = set(registry.ids())
    except ImportError:  # rules not importable (partial install): skip the id check
        known_rules = set()
    for rule_id, sev in cfg.rules.items():
        if known_rules and rule_id not in known_rules:
            problems.append(f"rules.{rule_id}: no such rule (see `netpol-guard rules`)")
        if sev not in SEVERITY_OVERRIDES:
            problems.append(f"rules.{rule_id}: severity must be one of {', '.join(SEVERITY_OVERRIDES)}, got {sev!r}")
    for k, v in cfg.dns.podLabels.items():
        for p in (label_key_problem(k), label_value_problem(v)):
            if p:
                problems.append(f"dns.podLabels.{k}: {p}")
    _check_cidrs("dns.nodeLocalAddresses", cfg.dns.nodeLocalAddresses, problems, addresses=True)
    _check_cidrs("cluster.podCIDRs", cfg.cluster.podCIDRs, problems)
    _check_cidrs("cluster.serviceCIDRs", cfg.cluster.serviceCIDRs, problems)
    if label_key_problem(cfg.isolation.labelKey):
        problems.append(f"isolation.labelKey: {label_key_problem(cfg.isolation.labelKey)}")
    if cfg.isolation.onLabelRemoved not in ("delete", "keep"):
        problems.append(f"isolation.onLabelRemoved: must be 'delete' or 'keep', got {cfg.isolation.onLabelRemoved!r}")
    from webhook.policy.selectors import dns_label_problem, dns_subdomain_problem
    for key in ("secretName", "webhookConfigName"):
        p = dns_subdomain_problem(getattr(cfg.certificates, key))
        if p:
            problems.append(f"certificates.{key}: {p}")
    if dns_label_problem(cfg.certificates.serviceName):
        problems.append(f"certificates.serviceName: {dns_label_problem(cfg.certificates.serviceName)}")
    c = cfg.certificates
    if c.validityDays < 1 or c.caValidityDays < c.validityDays:
        problems.append("certificates: validityDays must be >= 1 and caValidityDays >= validityDays")
    if c.renewBeforeDays >= c.validityDays:
        problems.append("certificates.renewBeforeDays: must be less than validityDays, "
                        "or the certificate is renewed in a loop")
    le = cfg.leaderElection
    if dns_subdomain_problem(le.leaseName):
        problems.append(f"leaderElection.leaseName: {dns_subdomain_problem(le.leaseName)}")
    if not (0 < le.retryPeriodSeconds < le.renewDeadlineSeconds < le.leaseDurationSeconds):
        problems.append("leaderElection: need 0 < retryPeriodSeconds < renewDeadlineSeconds < "
                        "leaseDurationSeconds (a leader must stop before its lease can expire)")
    if cfg.audit.fullSeconds and cfg.audit.fullSeconds < 60:
        problems.append("audit.fullSeconds: must be 0 (never) or at least 60: a full pass re-checks every policy")
    if cfg.audit.ownerClusterRole and dns_subdomain_problem(cfg.audit.ownerClusterRole):
        problems.append(f"audit.ownerClusterRole: {dns_subdomain_problem(cfg.audit.ownerClusterRole)}")
    if cfg.audit.maxDelayMilliseconds < cfg.audit.debounceMilliseconds:
        problems.append("audit.maxDelayMilliseconds: must be at least debounceMilliseconds")
    if cfg.server.maxRequestBytes < 1024:
        problems.append("server.maxRequestBytes: must be at least 1024")


def _env_leaves(cls: type, prefix: str, path: tuple[str, ...]) -> dict[str, tuple[tuple[str, ...], Any]]:
    out: dict[str, tuple[tuple[str, ...], Any]] = {}
    inst = cls()
    for f in dataclasses.fields(cls):
        default = getattr(inst, f.name)
        name = prefix + f.name.upper()
        if dataclasses.is_dataclass(default):
            out.update(_env_leaves(type(default), name + "_", path + (f.name,)))
        elif not isinstance(default, Mapping):
            out[name] = (path + (f.name,), default)
    return out


def _apply_env(data: dict[str, Any], env: Mapping[str, str], problems: list[str]) -> None:
    leaves = _env_leaves(Config, ENV_PREFIX, ())
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_FILE:
            continue
        if name not in leaves:
            problems.append(f"environment {name}: unknown setting (known: {', '.join(sorted(leaves))})")
            continue
        keys, default = leaves[name]
        value: Any = raw
        if isinstance(default, bool):
            low = raw.strip().lower()
            if low in ("true", "1", "yes"):
                value = True
            elif low in ("false", "0", "no"):
                value = False
            else:
                problems.append(f"environment {name}: must be true or false, got {raw!r}")
                continue
        elif isinstance(default, int):
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"environment {name}: must be an integer, got {raw!r}")
                continue
        elif isinstance(default, tuple):
            value = [x.strip() for x in raw.split(",") if x.strip()]
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                problems.append(f"environment {name}: {'.'.join(keys[:-1])} in the file is not a mapping")
                break
        else:
            node[keys[-1]] = value


def from_dict(data: Any, source: str = "configuration", env: Mapping[str, str] | None = None) -> Config:
    """Validate and build a Config; raises ConfigError listing every problem."""
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"top level must be a mapping, got {type(data).__name__}"], source)
    data = dict(data)
    if isinstance(data.get("rules"), Mapping):
        # YAML 1.1 reads an unquoted `off` as false (in PyYAML and in Helm alike); in a
        # severity slot it can only have meant "off".
        data["rules"] = {k: "off" if v is False else v for k, v in data["rules"].items()}
    if env is not None:
        _apply_env(data, env, problems)
    cfg = _build(Config, data, "", problems)
    if not problems:
        _validate(cfg, problems)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _read_yaml(path: str) -> Any:
    """The file's single YAML document (None when empty), read within
    safeload.MAX_CONFIG_BYTES and with aliases, nesting and numbers bounded."""
    return safeload.one_document(safeload.read_text(path, safeload.MAX_CONFIG_BYTES), full=True)


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load from a YAML file (or NETPOL_GUARD_CONFIG, or defaults) plus the environment."""
    env = os.environ if env is None else env
    path = path or env.get(ENV_FILE) or None
    data: Any = {}
    source = "environment"
    if path:
        source = path
        try:
            data = _read_yaml(path)
        except OSError as exc:
            raise ConfigError([f"cannot read: {exc.strerror}"], path) from None
        except safeload.UnsafeInput as exc:
            where = f"line {exc.line}: " if exc.line else ""
            raise ConfigError([f"{where}{exc.message}"], path) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError([f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"], path) from None
    return from_dict(data, source, env)


DEFAULT = Config()
