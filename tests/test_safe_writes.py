"""`generate --out` and `certs --out` never write through a symlink they did not create -
not one planted at a temporary name, not one at the final name - and keep their modes:
policies 0644, connectivity-tests.sh 0755, tls.key 0600."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from webhook.cli import main

REPO = Path(__file__).resolve().parent.parent
MAP = str(REPO / "examples" / "maps" / "three-tier.yaml")
SECRET = "someone else's file\n"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside the output directory that a planted symlink points at."""
    v = tmp_path / "victim.txt"
    v.write_text(SECRET)
    v.chmod(0o600)
    return v


def assert_untouched(victim: Path) -> None:
    assert victim.read_text() == SECRET
    assert mode(victim) == 0o600


def generated_names(tmp_path, capsys) -> list[str]:
    first = tmp_path / "first"
    assert main(["generate", "--map", MAP, "--out", str(first)]) == 0
    capsys.readouterr()
    return sorted(os.listdir(first))


def test_generate_out_keeps_the_documented_modes(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", "--map", MAP, "--out", str(out)]) == 0
    for name in os.listdir(out):
        assert mode(out / name) == (0o755 if name == "connectivity-tests.sh" else 0o644), name
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_generate_out_does_not_follow_a_symlink_at_the_temporary_name(tmp_path, victim, capsys):
    names = generated_names(tmp_path, capsys)
    out = tmp_path / "out"
    out.mkdir()
    for name in names:  # the temporary name the old code used, for every file it writes
        os.symlink(victim, out / f"{name}.tmp")
    assert main(["generate", "--map", MAP, "--out", str(out)]) == 0
    assert_untouched(victim)
    assert (out / "connectivity-tests.sh").read_text().startswith("#!")


def test_generate_out_replaces_a_symlink_at_the_final_name_instead_of_writing_through_it(tmp_path, victim, capsys):
    names = generated_names(tmp_path, capsys)
    out = tmp_path / "out"
    out.mkdir()
    for name in names:
        os.symlink(victim, out / name)
    assert main(["generate", "--map", MAP, "--out", str(out)]) == 0
    assert_untouched(victim)
    for name in names:
        assert not os.path.islink(out / name) and mode(out / name) in (0o644, 0o755)


def test_generate_out_leaves_a_planted_symlink_or_fifo_among_stale_files_alone(tmp_path, victim, capsys):
    out = tmp_path / "out"
    out.mkdir()
    victim.write_text("app.kubernetes.io/managed-by: netpol-guard-generate\n")  # looks generated
    os.symlink(victim, out / "old-policy.yaml")
    os.mkfifo(out / "pipe.yaml")  # opening it for reading would block
    assert main(["generate", "--map", MAP, "--out", str(out)]) == 0
    assert os.path.islink(out / "old-policy.yaml") and victim.exists()
    assert stat.S_ISFIFO(os.lstat(out / "pipe.yaml").st_mode)


CERTS = ["certs", "--service", "netpol-guard", "--namespace", "netpol-guard"]
BUNDLE = ("ca.crt", "tls.crt", "tls.key")


def test_certs_refuses_a_dangling_symlink_at_a_final_name(tmp_path, capsys):
    out = tmp_path / "certs"
    out.mkdir()
    target = tmp_path / "elsewhere" / "stolen.key"
    target.parent.mkdir()
    os.symlink(target, out / "tls.key")
    assert main([*CERTS, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert not target.exists()


def test_certs_force_replaces_symlinks_at_final_names_instead_of_writing_through_them(tmp_path, victim, capsys):
    out = tmp_path / "certs"
    out.mkdir()
    for name in BUNDLE:
        os.symlink(victim, out / name)
    assert main([*CERTS, "--out", str(out), "--force"]) == 0
    assert_untouched(victim)
    assert mode(out / "tls.key") == 0o600 and mode(out / "tls.crt") == 0o644 and mode(out / "ca.crt") == 0o644
    assert (out / "tls.key").read_text().startswith("-----BEGIN")


def test_certs_force_ignores_symlinks_at_temporary_names(tmp_path, victim, capsys):
    out = tmp_path / "certs"
    assert main([*CERTS, "--out", str(out)]) == 0
    for name in BUNDLE:  # the temporary names the old code used (this process's pid)
        os.symlink(victim, out / f"{name}.tmp-{os.getpid()}")
    assert main([*CERTS, "--out", str(out), "--force"]) == 0
    assert_untouched(victim)
    assert mode(out / "tls.key") == 0o600


def test_certs_key_is_private_whatever_the_umask_with_force(tmp_path, capsys):
    out = tmp_path / "certs"
    assert main([*CERTS, "--out", str(out)]) == 0
    old = os.umask(0)
    try:
        assert main([*CERTS, "--out", str(out), "--force"]) == 0
    finally:
        os.umask(old)
    assert mode(out / "tls.key") == 0o600


def test_certs_force_leaves_a_file_at_a_temporary_name_alone(tmp_path, capsys):
    """The temporary file is one this run creates under a fresh name, never a name chosen
    beforehand whose current holder gets removed."""
    out = tmp_path / "certs"
    assert main([*CERTS, "--out", str(out)]) == 0
    planted = out / f"tls.key.tmp-{os.getpid()}"
    planted.write_text(SECRET)
    assert main([*CERTS, "--out", str(out), "--force"]) == 0
    assert planted.read_text() == SECRET
