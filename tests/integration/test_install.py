"""What `make install` puts in place, installed for real into a scratch DESTDIR by the
Makefile's own install-files target: the systemd unit (which systemd-analyze verify accepts),
the commented config file (which parses, and whose every option uncommented is the default),
and lclient's completions (the bash one loaded and asked in a real bash)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lclusterd.__main__ import config_template
from lclusterd.config import Config, load_file, option_names
from support.processes import LCLIENT, LCLUSTERD

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    destdir = tmp_path_factory.mktemp("destdir")
    result = subprocess.run(["make", "-C", str(ROOT), "install-files", f"DESTDIR={destdir}", f"VENV={VENV}",
                             f"BINDIR={Path(LCLUSTERD).parent}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return destdir


def test_systemd_accepts_the_unit(installed):
    assert shutil.which("systemd-analyze"), "systemd-analyze not found: `make test` installs systemd"
    unit = installed / "etc/systemd/system/lclusterd.service"
    text = unit.read_text()
    assert f"ExecStart={LCLUSTERD}\n" in text and "Restart=on-failure\n" in text and "RestartPreventExitStatus=2" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID\n" in text  # systemctl reload: the node reads its --tls-dir again
    for status in ("#   0 ", "#   2 ", "#   3 ", "#   130 "):  # the exit statuses are documented in it
        assert status in text
    # verify exits 0 on a directive it ignores, saying so: nothing may be said
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_config_file_lists_every_option_at_its_default(installed):
    path = installed / "etc/lclusterd/lclusterd.toml"
    assert path.read_text() == config_template()
    assert load_file(path) == {}  # everything commented out: the daemon's defaults
    settings = [line[2:] for line in path.read_text().splitlines() if line.startswith("# ") and " = " in line]
    assert sorted(line.split(" = ")[0].replace("-", "_") for line in settings) == sorted(option_names())
    uncommented = path.with_name("all.toml")
    uncommented.write_text("\n".join(settings) + "\n")
    values = load_file(uncommented)
    node_name = values.pop("node_name")  # "" there: the host name, as when it is not set
    assert node_name == "" and Config(**values) == Config()


def test_a_second_install_keeps_the_operators_config(installed):
    path = installed / "etc/lclusterd/lclusterd.toml"
    original = path.read_text()
    path.write_text('capacity = 3\n')
    try:
        result = subprocess.run(["make", "-C", str(ROOT), "install-files", f"DESTDIR={installed}", f"VENV={VENV}"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert path.read_text() == 'capacity = 3\n' and "kept" in result.stdout
    finally:
        path.write_text(original)


def test_bash_loads_the_completion_and_completes_options_and_states(installed):
    script = installed / "usr/share/bash-completion/completions/lclient"
    generated = subprocess.run([LCLIENT], env={"_LCLIENT_COMPLETE": "bash_source", "PATH": "/usr/bin:/bin"},
                               capture_output=True, text=True, timeout=30)
    assert generated.returncode == 0 and generated.stdout == script.read_text()
    loaded = subprocess.run(["bash", "-c", f"source <({LCLIENT_COMPLETE_BASH}); complete -p lclient"],
                            capture_output=True, text=True, timeout=30)
    assert loaded.stdout.strip() == "complete -o nosort -F _lclient_completion lclient", loaded.stderr
    assert complete(script, "lclient -ad") == ["-add"]
    assert complete(script, "lclient -list -state RUN") == ["RUNNING"]
    assert {"-events", "-nodes", "-wait"} <= set(complete(script, "lclient -"))


LCLIENT_COMPLETE_BASH = f"_LCLIENT_COMPLETE=bash_source {LCLIENT}"


def complete(script: Path, line: str) -> list[str]:
    """What bash offers for the last word of `line`: the completion function, as TAB calls it."""
    words = line.split(" ")
    program = (f"source {script}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; "
               f"_lclient_completion {LCLIENT}; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return [word for word in result.stdout.splitlines() if word]


def test_the_zsh_completion_is_a_compdef_for_lclient(installed):
    script = installed / "usr/share/zsh/vendor-completions/_lclient"
    text = script.read_text()
    assert text.startswith("#compdef lclient\n") and "_LCLIENT_COMPLETE=zsh_complete" in text
