"""The kubeconfig, read like every other file the commands take: through webhook.safeload
(a size limit, aliases and nesting bounded, duplicate keys refused) and only then handed to
the kubernetes client as data.

The client's own load_kube_config reads the file with pure-Python yaml.safe_load and
copies it with deepcopy, with no limit: a 668-byte alias bomb in a kubeconfig took 1.6 GB
and 30 s before a MemoryError, a 50 MB one-line file was still parsing after 30 s. What
kubectl does is kept: KUBECONFIG may list several files (missing ones are ignored; the
first file to define a cluster, context or user by name wins, and the first
current-context), and relative paths in a file (certificate-authority, client-certificate,
client-key, tokenFile) are relative to that file's directory.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import yaml

from webhook import safeload

SECTIONS = ("clusters", "contexts", "users")
DEFAULT_PATH = "~/.kube/config"


class KubeconfigError(Exception):
    """An unusable kubeconfig: the message names the file (and line where known)."""

    def __init__(self, file: str, message: str, line: int = 0):
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {message}")


def kubeconfig_paths(kubeconfig: Optional[str], env: Mapping[str, str] = os.environ) -> list[str]:
    """The files to read: the one named (which must exist), else those KUBECONFIG lists
    that exist, else ~/.kube/config."""
    if kubeconfig:
        return [os.path.expanduser(kubeconfig)]
    listed = [os.path.expanduser(p) for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        existing = [p for p in listed if os.path.exists(p)]
        if not existing:
            raise KubeconfigError(env["KUBECONFIG"], "none of the files KUBECONFIG lists exists")
        return existing
    return [os.path.expanduser(DEFAULT_PATH)]


def read_kubeconfig(path: str) -> dict:
    """One kubeconfig file as a dict, read within safeload's limits; KubeconfigError."""
    try:
        data = safeload.one_document(safeload.read_text(path, safeload.MAX_KUBECONFIG_BYTES))
    except OSError as exc:
        raise KubeconfigError(path, f"cannot read: {exc.strerror}") from None
    except safeload.UnsafeInput as exc:
        raise KubeconfigError(path, exc.message, exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise KubeconfigError(path, f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
                              mark.line + 1 if mark else 0) from None
    if not isinstance(data, dict):
        raise KubeconfigError(path, "not a kubeconfig (expected a mapping with clusters, contexts and users)")
    for section in SECTIONS:
        items = data.get(section) or []
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str)
                                                  for i in items):
            raise KubeconfigError(path, f"{section} must be a list of mappings, each with a name")
    return data


def merged_kubeconfig(paths: list[str]) -> Any:
    """The files merged as kubectl merges them, as the client's ConfigNode: each cluster,
    context and user remembers its file, so relative paths in it resolve against that
    file's directory (the client's KubeConfigLoader does that with config_base_path=None)."""
    from kubernetes.config.kube_config import ConfigNode

    merged: Any = None
    for path in paths:
        data = read_kubeconfig(path)
        if merged is None:
            merged = ConfigNode(path, {**data, **{s: [] for s in SECTIONS}}, path)
        for section in SECTIONS:
            names = {item.value["name"] for item in merged.value[section]}
            merged.value[section].extend(ConfigNode(f"{path}/{section}[name={item['name']}]", item, path)
                                         for item in data.get(section) or [] if item["name"] not in names)
        if "current-context" not in merged.value and data.get("current-context"):
            merged.value["current-context"] = data["current-context"]
    return merged


def load_kubeconfig(configuration: Any, kubeconfig: Optional[str] = None, context: Optional[str] = None) -> None:
    """Set a kubernetes.client.Configuration from the kubeconfig (the named file, else
    KUBECONFIG, else ~/.kube/config) and context (else its current-context). Raises
    KubeconfigError for a file that is unusable as data; the client's ConfigException
    for one it cannot use (an unknown context, a missing certificate file)."""
    from kubernetes.config.kube_config import KubeConfigLoader

    loader = KubeConfigLoader(config_dict=merged_kubeconfig(kubeconfig_paths(kubeconfig)),
                              active_context=context, config_base_path=None)
    loader.load_and_set(configuration)
