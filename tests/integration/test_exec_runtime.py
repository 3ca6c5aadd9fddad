"""Launcher.exec (runtime/execs.py, jobinit/enter.c) in both user-namespace modes, with real
namespaces and cgroups: a command entering a running job is one of its processes (the job's
PID namespace, hostname, host ids, cgroup, bounding set, no_new_privs and seccomp filter);
the process that waits for it stays on the host, outside the job's cgroup; its status, its
failures and the job's end come back; nothing is left behind."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import uuid

import pytest

from lclusterd.runtime.cgroups import detect
from lclusterd.runtime.spec import RuntimeSpec

from support.jobs import until


def run(runtime, job_id: str, argv: list[str], timeout: float = 30):
    """(stdout, stderr, ExecFinished) of `argv` run in the job."""
    session = runtime.launcher.exec(job_id, argv)
    out = {session.stdout: b"", session.stderr: b""}
    open_fds = list(out)
    while open_fds:
        ready, _, _ = select.select(open_fds, [], [], timeout)
        assert ready, "the command's output never ended"
        for fd in ready:
            data = os.read(fd, 65536)
            out[fd] += data
            if not data:
                open_fds.remove(fd)
                os.close(fd)
    assert session.done.wait(timeout)
    return out[session.stdout].decode(), out[session.stderr].decode(), session.finished


def sh(runtime, job_id: str, command: str):
    return run(runtime, job_id, ["/bin/sh", "-c", command])


@pytest.fixture
def job(runtime, rootfs):
    spec = RuntimeSpec.shell(f"exec-{uuid.uuid4().hex[:12]}", "sleep 300", rootfs, memory_bytes=64 << 20, pids=64,
                             hostname="exec-test")
    runtime.launcher.submit(spec)
    until(lambda: sh(runtime, spec.job_id, "true")[2].exit_code == 0, "the job to run")
    yield spec
    runtime.launcher.kill(spec.job_id, 0)
    runtime.launcher.wait(spec.job_id, 30)
    assert runtime.leftovers() == []


def host_facts(pid: int) -> tuple[str, str, str]:
    """(its uids, its bounding set, its cgroups) as the host sees them."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    with open(f"/proc/{pid}/cgroup") as f:
        return status["Uid"], status["CapBnd"], f.read()


def test_runtime_an_exec_is_one_of_the_jobs_processes(runtime, job):
    out, err, end = sh(runtime, job.job_id, "hostname; echo $$; id -u; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; "
                                            "cat /proc/self/cgroup | grep -vc ':/$'; unshare -m true; echo unshare=$?")
    assert (end.exit_code, end.error) == (0, ""), err
    assert out.splitlines() == ["exec-test", out.splitlines()[1], "0", "NoNewPrivs:\t1", "Seccomp:\t2", "0", "unshare=1"]
    assert int(out.splitlines()[1]) > 1  # in the job's PID namespace, where its command is 1
    # seen from the host, while it runs: in the job's cgroup, with the job's ids and bounding set
    cgroup = detect(parent=runtime.cgroup_parent).open(job.job_id)
    session = runtime.launcher.exec(job.job_id, ["/bin/sleep", "300"])
    until(lambda: len(cgroup.pids()) == 2, "the exec to join the job's cgroup")
    init, entered = sorted(cgroup.pids())
    assert host_facts(entered) == host_facts(init)
    waiting = children_named(runtime.launcher.helper_pid, "lclusterd:exec")
    assert len(waiting) == 1 and waiting[0] not in cgroup.pids()  # the waiting parent stays on the host
    runtime.launcher.exec_kill(session)
    assert session.done.wait(30) and session.finished.signal == signal.SIGKILL
    for fd in (session.stdout, session.stderr):
        os.close(fd)
    until(lambda: cgroup.pids() == [init], "the exec's process to end with its parent")


def test_runtime_an_execs_status_failures_and_the_jobs_end(runtime, job):
    assert sh(runtime, job.job_id, "echo out; echo err >&2; exit 5")[:2] == ("out\n", "err\n")
    assert sh(runtime, job.job_id, "exit 5")[2].exit_code == 5
    assert sh(runtime, job.job_id, "kill -TERM $$")[2].signal == signal.SIGTERM
    _, _, missing = run(runtime, job.job_id, ["/no/such/binary"])
    assert missing.error == "find command: command not found in the rootfs: /no/such/binary"
    assert run(runtime, "exec-nosuchjob0", ["true"])[2].error == "job exec-nosuchjob0 is not running on this node"
    session = runtime.launcher.exec(job.job_id, ["/bin/sleep", "300"])
    cgroup = detect(parent=runtime.cgroup_parent).open(job.job_id)
    until(lambda: len(cgroup.pids()) == 2, "the exec to run")
    runtime.launcher.kill(job.job_id, 0)
    assert session.done.wait(30) and session.finished.signal == signal.SIGKILL  # the job's end ends it
    for fd in (session.stdout, session.stderr):
        os.close(fd)
    runtime.launcher.wait(job.job_id, 30)
    assert run(runtime, job.job_id, ["true"])[2].error.endswith("is not running on this node")


def children_named(pid: int, name: str) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if line.split()[1:] == [name]]
