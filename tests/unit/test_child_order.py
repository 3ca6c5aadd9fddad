"""The job's set-up steps run in the order the security of the container rests on,
checked with a recording fake of every kernel-facing call (youki's TestHelperSyscall
idea): cgroup join before any namespace or mount, the cgroup namespace after the join,
pivot_root before no_new_privs before the capability drop before exec, and a failing
step reported on the status socket instead of an exec."""

from __future__ import annotations

import json
import os
import socket

import pytest

from lclusterd.runtime import child

CALLS: list[str] = []


class Exited(Exception):
    def __init__(self, code: int):
        self.code = code


@pytest.fixture
def recorded(monkeypatch):
    CALLS.clear()

    def record(name, result=None):
        def fake(*args, **kwargs):
            CALLS.append(name)
            return result
        return fake

    monkeypatch.setattr(child.cgroups, "join", record("join cgroup"))
    monkeypatch.setattr(child.kernel, "unshare", lambda flags: CALLS.append(f"unshare {flags:#x}"))
    monkeypatch.setattr(child.kernel, "prctl", lambda option, *a: CALLS.append(f"prctl {option}"))
    monkeypatch.setattr(child.kernel, "sethostname", record("sethostname"))
    monkeypatch.setattr(child.kernel, "close_range_cloexec", record("close fds"))
    monkeypatch.setattr(child.mounts, "apply", lambda plan: CALLS.append(f"mounts {plan[0].kind}"))
    monkeypatch.setattr(child.mounts, "pivot_into", record("pivot_root"))
    monkeypatch.setattr(child.caps, "set_sets", record("capset"))
    monkeypatch.setattr(child, "find_command", record("find command", "/bin/true"))
    # dup2, umask and chdir stay real (pytest itself uses dup2): stdio is [0, 1, 2], so
    # the dup2s change nothing, and the umask and working directory are put back.
    old_umask = os.umask(0o022)
    monkeypatch.chdir(os.getcwd())

    def fake_exec(*args):
        CALLS.append("execve")
        raise Exited(0)

    monkeypatch.setattr(child.os, "execve", fake_exec)

    def fake_exit(code):
        raise Exited(code)

    monkeypatch.setattr(child.os, "_exit", fake_exit)
    yield CALLS
    os.umask(old_umask)


def job() -> child.PreparedJob:
    return child.PreparedJob(job_id="j" * 32, argv=["/bin/true"], env={"PATH": "/bin"}, cwd="/",
                             hostname="h", rootfs="/rootfs", cgroup_procs=["/cg/cgroup.procs"], keep_caps=0x5)


def test_job_steps_run_in_the_order_that_keeps_it_contained(recorded):
    left, right = socket.socketpair()
    with left, right, pytest.raises(Exited):
        child.run_job(job(), [0, 1, 2], left.fileno(), "/scratch")
    NO_NEW_PRIVS, PDEATHSIG = f"prctl {child.kernel.PR_SET_NO_NEW_PRIVS}", f"prctl {child.kernel.PR_SET_PDEATHSIG}"
    assert recorded == [
        PDEATHSIG, "join cgroup", f"unshare {child.kernel.CLONE_NEWCGROUP:#x}",
        "mounts mount", "pivot_root", "mounts mask", "sethostname", NO_NEW_PRIVS, "capset",
        "find command", "close fds", "execve"]


def test_a_failing_step_is_reported_with_its_name_and_no_exec(recorded, monkeypatch):
    def no_pivot(root):
        raise OSError(22, "pivot_root(., .): Invalid argument")

    monkeypatch.setattr(child.mounts, "pivot_into", no_pivot)
    left, right = socket.socketpair()
    with left, right:
        with pytest.raises(Exited) as exited:
            child.run_job(job(), [0, 1, 2], left.fileno(), "/scratch")
        assert exited.value.code == 127
        line = right.recv(4096)
    assert line.startswith(b"E") and line.endswith(b"\n")
    assert json.loads(line[1:]) == {"step": "pivot_root", "errno": 22, "detail": "pivot_root(., .): Invalid argument"}
    assert "execve" not in recorded and "capset" not in recorded


def test_missing_command_is_described_without_errno_noise():
    with pytest.raises(FileNotFoundError) as error:
        child.find_command("no-such-command", "/nonexistent-dir")
    assert child.describe(error.value) == "command not found in the rootfs: no-such-command"
    assert child.find_command("sh", os.pathsep.join(["/nonexistent-dir", "/bin"])) == "/bin/sh"
