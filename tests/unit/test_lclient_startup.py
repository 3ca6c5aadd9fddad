"""lclient's start-up stays cheap: what a command does not need is not imported (gRPC and
protobuf cost several times the interpreter's start), and the launcher `make prep` puts on
PATH starts without site, so no .pth file and no editable-install finder runs. Whole-process
times are bench/client.py's; these tests hold what makes them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import launcher  # noqa: E402

HEAVY = ("grpc", "google.protobuf", "lclusterd.rpc.lclusterd_pb2")


def imported_by(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running `code`."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(out.split())


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(HEAVY))


@pytest.mark.parametrize("module", ["lclient", "lclient.cli", "lclient.client", "lclient.format"])
def test_importing_the_client_loads_neither_grpc_nor_protobuf(module):
    assert heavy(imported_by(f"import {module}")) == []


def test_help_and_a_usage_error_load_neither_grpc_nor_protobuf():
    code = ("from lclient.cli import run\n"
            "assert run(['-h']) == 0\n"
            "assert run(['-check', 'x', '-kill', 'y']) == 2\n"
            "assert run(['-mem', '1G', '-list']) == 2\n")
    assert heavy(imported_by(code)) == []


def test_a_call_loads_them_when_it_needs_them():
    code = ("from lclient.cli import run\n"
            "assert run(['-server', '127.0.0.1:1', '-check', '0' * 32]) == 3\n")
    modules = imported_by(code)
    assert {"grpc", "lclusterd.rpc.lclusterd_pb2"} <= modules


@pytest.fixture
def written(tmp_path) -> Path:
    out = tmp_path / "lclient"
    launcher.write_launcher(out)
    return out


def test_the_launcher_starts_without_site_or_environment(written):
    first = written.read_text().splitlines()[0]
    # one argument after the interpreter (the kernel passes the rest of the line as one): -I and -S
    assert first == f"#!{sys.executable} -IS"
    assert os.access(written, os.X_OK)
    assert not written.with_name("lclient.new").exists()


def test_the_launcher_runs_no_pth_file_nor_the_editable_finder(written):
    """Run as its shebang runs it, with -X importtime: nothing of site or of a .pth file is imported."""
    result = subprocess.run([sys.executable, "-IS", "-X", "importtime", str(written), "-h"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Usage: lclient" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "lclient.cli" in imported
    assert not [m for m in imported if m == "site" or "editable" in m or m == "_distutils_hack"], imported
    assert heavy(imported) == []


def test_the_launcher_ignores_python_variables(written, tmp_path):
    """-I: a PYTHONPATH (here one whose grpc and lclient would fail) cannot change what lclient runs."""
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / "lclient").mkdir()
    (trap / "lclient" / "__init__.py").write_text("raise SystemExit('the PYTHONPATH lclient ran')\n")
    (trap / "grpc.py").write_text("raise SystemExit('the PYTHONPATH grpc ran')\n")
    env = {**os.environ, "PYTHONPATH": str(trap), "LCLUSTER_SERVER": "127.0.0.1:1"}
    result = subprocess.run([str(written), "-check", "0" * 32], capture_output=True, text=True, env=env)
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("lclient: cannot reach lclusterd at 127.0.0.1:1")
    assert len(result.stderr.splitlines()) == 1
