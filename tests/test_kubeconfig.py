"""The kubeconfig (`--kubeconfig` of lint, simulate, audit, serve, controller; KUBECONFIG;
~/.kube/config) is read within the limits of every other input (webhook/safeload.py) before
the kubernetes client sees it, and still means what it means to kubectl: several files in
KUBECONFIG, relative certificate paths relative to the file that names them."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.test_hostile_input import assert_refused, run_limited
from webhook import safeload
from webhook.cli import main
from webhook.cluster.kubeconfig import KubeconfigError, load_kubeconfig


def _dead_server() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"https://127.0.0.1:{s.getsockname()[1]}"


def kubeconfig(extra: str = "", server: str = "https://127.0.0.1:1") -> str:
    return ("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"" + server + "\", "
            "insecure-skip-tls-verify: true}\n" + extra +
            "users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: dev\n  context: {cluster: c, user: u}\n"
            "current-context: dev\n")


# 9^6 (531,441) nodes from ~300 bytes, under clusters[0].extra: the client's own loader
# expanded it (a 10^8 one took 1.6 GB and 30 s), then copied it.
BOMB = "  extra:\n    a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"    {n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, n in zip("abcde", "bcdef"))


@pytest.mark.parametrize("command", [["lint", "--allow-empty"], ["audit"], ["simulate"]])
def test_an_alias_bomb_in_the_kubeconfig_is_exit_2_naming_it(tmp_path, command):
    (tmp_path / "kc").write_text(kubeconfig(BOMB, _dead_server()))
    result = run_limited([*command, "--kubeconfig", "kc"], tmp_path)
    assert_refused(result, "kc:", "YAML aliases expand this document")
    assert result.stderr.startswith(f"netpol-guard {command[0]}: kubeconfig kc: cannot be used: kc:"), result.stderr


@pytest.mark.parametrize("text, phrase", [
    (kubeconfig() + "#" + "x" * 5000 + "\n", "file is larger than the limit of 4,096 bytes"),
    (kubeconfig().replace("current-context: dev\n", "current-context: dev\ncurrent-context: prod\n"),
     "current-context: duplicate key 'current-context'"),
    ("clusters: {c: x}\n", "clusters must be a list of mappings, each with a name"),
])
def test_an_unusable_kubeconfig_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, text, phrase):
    monkeypatch.setattr(safeload, "MAX_KUBECONFIG_BYTES", 4096)
    (tmp_path / "kc").write_text(text)
    assert main(["lint", "--kubeconfig", str(tmp_path / "kc")]) == 2
    err = capsys.readouterr().err
    assert f"kubeconfig {tmp_path / 'kc'}: cannot be used: {tmp_path / 'kc'}" in err and phrase in err, err
    assert len(err.strip().splitlines()) == 1


def test_relative_certificate_paths_are_relative_to_the_kubeconfig(tmp_path, monkeypatch):
    from kubernetes.client import Configuration
    (tmp_path / "kube").mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / "kube" / name).write_text("not used here\n")
    (tmp_path / "kube" / "config").write_text(
        kubeconfig().replace("insecure-skip-tls-verify: true", "certificate-authority: ca.crt")
        .replace("{token: t}", "{client-certificate: client.crt, client-key: ./client.key}"))
    monkeypatch.chdir(tmp_path)  # not the kubeconfig's directory
    configuration = Configuration()
    load_kubeconfig(configuration, "kube/config")
    assert configuration.ssl_ca_cert == str(tmp_path / "kube" / "ca.crt")
    assert configuration.cert_file == str(tmp_path / "kube" / "client.crt")
    assert configuration.key_file == str(tmp_path / "kube" / "client.key")


def test_kubeconfig_lists_several_files_merged_as_kubectl_does(tmp_path, monkeypatch):
    from kubernetes.client import Configuration
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "ca.crt").write_text("x\n")
    # a: the context and user, and the current-context; b: the cluster, with a CA beside it
    (tmp_path / "a" / "config").write_text(
        "users:\n- name: u\n  user: {token: from-a}\ncontexts:\n- name: dev\n  context: {cluster: c, user: u}\n"
        "current-context: dev\n")
    (tmp_path / "b" / "config").write_text(
        "clusters:\n- name: c\n  cluster: {server: 'https://b.example:6443', certificate-authority: ca.crt}\n"
        "users:\n- name: u\n  user: {token: from-b}\ncurrent-context: other\n")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/missing:{tmp_path}/a/config:{tmp_path}/b/config")
    configuration = Configuration()
    load_kubeconfig(configuration)
    assert configuration.host == "https://b.example:6443"
    assert configuration.ssl_ca_cert == str(tmp_path / "b" / "ca.crt")
    assert "Bearer from-a" in configuration.api_key.values()  # the first file's user wins


def test_a_kubeconfig_list_of_missing_files_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path}/x:{tmp_path}/y")
    with pytest.raises(KubeconfigError, match="none of the files KUBECONFIG lists exists"):
        load_kubeconfig(object())
