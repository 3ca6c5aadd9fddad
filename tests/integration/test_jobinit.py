"""The real job init binary (lclusterd-jobinit, built by make prep) run on its own, outside
any namespace: how it reports a failing step, holds back a spare's failure until its job
arrives, exits quietly when no job comes, and execs with the job's stdio. The runtime tests
(test_runtime.py) cover it inside real containers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from lclusterd.runtime import channel, plan


class Init:
    """The init spawned with `spare` as its argv plan and a socket on its fd 3."""

    def __init__(self, spare: list[str]):
        self.sock, theirs = socket.socketpair()
        with theirs:
            self.pid = os.posix_spawn(str(plan.JOBINIT), [str(plan.JOBINIT), *spare], {},
                                      file_actions=[(os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)])

    def send_job(self, tokens: list[str], stdio: list[int]) -> None:
        channel.send_bytes(self.sock, plan.encode(tokens), stdio)

    def finish(self) -> tuple[bytes, int]:
        """What it wrote on its socket until EOF, and its exit status."""
        chunks = []
        while data := self.sock.recv(4096):
            chunks.append(data)
        self.sock.close()
        _, status = os.waitpid(self.pid, 0)
        return b"".join(chunks), os.waitstatus_to_exitcode(status)


def report(data: bytes) -> dict:
    assert data.startswith(b"E") and data.endswith(b"\n"), data
    return json.loads(data[1:])


@pytest.fixture
def stdio():
    with tempfile.TemporaryFile() as out, open(os.devnull, "rb") as null:
        yield [null.fileno(), out.fileno(), out.fileno()], out


def exec_tokens(argv: list[str], cwd: str = "/") -> list[str]:
    return ["exec", cwd, "/usr/bin:/bin", str(len(argv)), *argv, "1", "PATH=/usr/bin:/bin"]


def test_a_job_execs_with_its_stdio_and_reports_nothing(stdio):
    fds, out = stdio
    init = Init(["wait"])
    init.send_job(["stdio", *exec_tokens(["sh", "-c", "echo ok $PATH"])], fds)
    assert init.finish() == (b"", 0)
    out.seek(0)
    assert out.read() == b"ok /usr/bin:/bin\n"


def test_a_failing_job_step_is_reported_by_name_and_nothing_is_executed(tmp_path, stdio):
    marker = tmp_path / "ran"
    init = Init(["wait"])
    init.send_job(["step", "make things", "mkdir", str(tmp_path / "no" / "such"), "755",
                   "stdio", *exec_tokens(["touch", str(marker)])], stdio[0])
    data, code = init.finish()
    assert code == 127 and not marker.exists()
    assert report(data) == {"step": "make things", "errno": 2,
                            "detail": f"mkdir({tmp_path}/no/such): No such file or directory"}


def test_a_spare_failure_is_held_back_until_its_job_arrives(tmp_path, stdio):
    init = Init(["step", "scratch", "mkdir", str(tmp_path / "no" / "such"), "755", "loopback", "wait"])
    init.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):  # still waiting for its job, not exited
        init.sock.recv(1)
    init.sock.settimeout(None)
    init.send_job(["stdio", *exec_tokens(["true"])], stdio[0])
    data, code = init.finish()
    assert code == 127 and report(data)["step"] == "scratch"


def test_no_job_coming_exits_quietly():
    init = Init(["wait"])
    init.sock.shutdown(socket.SHUT_WR)
    assert init.finish() == (b"", 0)


def test_a_plan_it_does_not_understand_is_a_failure_not_a_crash(stdio):
    init = Init(["wait"])
    init.send_job(["step", "odd", "frobnicate", *exec_tokens(["true"])], stdio[0])
    data, code = init.finish()
    assert code == 127 and report(data) == {"step": "odd", "errno": 22, "detail": "unknown op frobnicate"}


def test_missing_command_and_working_directory_are_named(stdio):
    for tokens, detail in ((exec_tokens(["no-such-command"]), ("find command", "command not found in the rootfs: no-such-command")),
                           (exec_tokens(["true"], cwd="/no/such/dir"), ("chdir", "working directory /no/such/dir does not exist in the rootfs"))):
        init = Init(["wait"])
        init.send_job(["stdio", *tokens], stdio[0])
        data, code = init.finish()
        assert code == 127 and (report(data)["step"], report(data)["detail"]) == detail


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> str:
    """A static probe (data/seccomp_probe.c, built with the musl-gcc make prep installs) that
    makes each guarded call in a child of its own and prints `name ok` or `name <strerror>`."""
    binary = tmp_path_factory.mktemp("probe") / "seccomp_probe"
    subprocess.run(["musl-gcc", "-static", "-O2", "-o", str(binary), str(Path(__file__).parent / "data" / "seccomp_probe.c")],
                   check=True)
    return str(binary)


def run_probe(probe: str, stdio, filtered: bool) -> dict[str, str]:
    fds, out = stdio
    seccomp = ["nnp", "seccomp", ",".join(plan.SECCOMP_DENY), "1"] if filtered else []
    init = Init(["wait"])
    init.send_job(["stdio", *seccomp, *exec_tokens([probe])], fds)
    assert init.finish() == (b"", 0)
    out.seek(0)
    return dict(line.split(" ", 1) for line in out.read().decode().splitlines())


def test_seccomp_denies_what_the_plan_lists_and_new_namespaces(probe, stdio):
    # without the filter each call works here (as root, outside any container) ...
    assert run_probe(probe, stdio, filtered=False) == {
        "keyctl": "ok", "unshare-user": "ok", "clone-newuser": "ok", "clone3": "Invalid argument", "getpid": "ok"}
    stdio[1].seek(0)
    stdio[1].truncate()
    # ... with it: EPERM for listed calls and namespace flags, ENOSYS for clone3, fork still works
    assert run_probe(probe, stdio, filtered=True) == {
        "keyctl": "Operation not permitted", "unshare-user": "Operation not permitted",
        "clone-newuser": "Operation not permitted", "clone3": "Function not implemented", "getpid": "ok"}


def test_a_syscall_name_the_init_does_not_know_is_refused(stdio):
    init = Init(["wait"])
    init.send_job(["stdio", "nnp", "step", "seccomp", "seccomp", "keyctl,frobnicate", "1", *exec_tokens(["true"])], stdio[0])
    data, code = init.finish()
    assert code == 127 and report(data) == {"step": "seccomp", "errno": 22, "detail": "seccomp: unknown syscall frobnicate"}
