"""The runtime for real: namespaces, overlay + pivot_root, cgroups, kill, clean-up.

Runs as root on this host's cgroup driver (ids say which: cgroup-v1-real here,
cgroup-v2-real inside ../shared/v2vm via `make test-v2`). After every test, nothing of
any job may remain: no job directory, cgroup, mount or running job.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from lclusterd.errors import InvalidSpec
from lclusterd.runtime import caps
from lclusterd.runtime.cgroups import detect
from lclusterd.runtime.launcher import JobFinished, JobStarted, Launcher
from lclusterd.runtime.spec import RunResult, RuntimeSpec

from conftest import cgroup_parent_dirs


@pytest.fixture(autouse=True)
def nothing_leaks(runtime):
    yield
    assert runtime.leftovers() == []


def spec(rootfs: str, command: str, **kw) -> RuntimeSpec:
    return RuntimeSpec.shell(uuid.uuid4().hex, command, rootfs, **kw)


def run_capturing(runtime, tmp_path: Path, rootfs: str, command: str, **kw) -> tuple[RunResult, str, str]:
    """Run a shell command line; return the result, its stdout and its stderr."""
    job = spec(rootfs, command, stdout_path=str(tmp_path / f"{job_id_of(command)}.out"), **kw)
    job.stderr_path = job.stdout_path[:-4] + ".err"
    result = runtime.launcher.run(job, timeout=60)
    return result, Path(job.stdout_path).read_text(), Path(job.stderr_path).read_text()


def job_id_of(command: str) -> str:
    return uuid.uuid4().hex


# -- isolation ------------------------------------------------------------------------

def test_job_is_pid_1_and_sees_no_host_process(runtime, rootfs, tmp_path):
    result, out, _ = run_capturing(runtime, tmp_path, rootfs, "echo $$; for p in /proc/[0-9]*; do echo $p; done")
    assert result.status == "EXITED" and result.exit_code == 0
    assert out.split() == ["1", "/proc/1"]


def test_job_has_its_own_hostname(runtime, rootfs, tmp_path):
    result, out, _ = run_capturing(runtime, tmp_path, rootfs, "hostname", hostname="job-host")
    assert out.strip() == "job-host"
    assert os.uname().nodename != "job-host"


def test_job_default_hostname_is_short_job_id(runtime, rootfs, tmp_path):
    job = spec(rootfs, "hostname", stdout_path=str(tmp_path / "out"))
    runtime.launcher.run(job, timeout=60)
    assert (tmp_path / "out").read_text().strip() == job.job_id[:12]


def test_only_loopback_exists_and_is_up(runtime, rootfs, tmp_path):
    result, out, _ = run_capturing(runtime, tmp_path, rootfs,
                                   "ls /sys/class/net; cat /sys/class/net/lo/flags; ping -c 1 -W 1 127.0.0.1 >/dev/null && echo ping-ok")
    names, flags, ping = out.split()
    assert names == "lo"
    assert int(flags, 16) & 0x1  # IFF_UP
    assert ping == "ping-ok"


def test_host_files_are_invisible(runtime, rootfs, tmp_path):
    marker = Path("/var/tmp") / f"lclusterd-marker-{uuid.uuid4().hex}"
    marker.write_text("host secret")
    try:
        result, out, _ = run_capturing(
            runtime, tmp_path, rootfs,
            f"test -e {marker} && echo visible; test -e /work && echo work-visible; grep -c . /proc/self/mountinfo >/dev/null; echo done")
    finally:
        marker.unlink()
    assert out.split() == ["done"]


def test_root_is_an_overlay_and_old_root_is_gone(runtime, rootfs, tmp_path):
    result, out, _ = run_capturing(runtime, tmp_path, rootfs, "cat /proc/self/mountinfo")
    mount_points = [line.split()[4] for line in out.splitlines()]
    root_line = next(line for line in out.splitlines() if line.split()[4] == "/")
    assert " - overlay " in root_line
    assert set(mount_points) >= {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/sys", "/tmp"}
    assert not any(p.startswith(("/var/lib", "/work", "/oldroot")) for p in mount_points)


def test_sys_is_read_only_and_proc_paths_are_masked(runtime, rootfs, tmp_path):
    result, out, err = run_capturing(
        runtime, tmp_path, rootfs,
        "touch /sys/x 2>/dev/null || echo sys-ro; echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo procsys-ro;"
        " wc -c < /proc/keys; wc -c < /proc/timer_list")
    assert out.split() == ["sys-ro", "procsys-ro", "0", "0"]


def test_capabilities_are_reduced_no_new_privs_and_seccomp_are_set(runtime, rootfs, tmp_path):
    result, out, _ = run_capturing(runtime, tmp_path, rootfs, "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status")
    status = dict(line.split(":\t") for line in out.splitlines())
    keep = caps.mask_of(caps.DEFAULT_KEEP)
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd"):
        assert int(status[name], 16) == keep, name
    assert int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert (status["Seccomp"].strip(), status["Seccomp_filters"].strip()) == ("2", "1")  # one filter (test_jobinit)
    assert not keep & (1 << caps.CAPABILITIES["SYS_ADMIN"])


def test_only_stdio_is_open_and_environment_is_clean(runtime, rootfs, tmp_path, monkeypatch):
    result, out, _ = run_capturing(runtime, tmp_path, rootfs, "ls /proc/$$/fd; echo ---; env | sort",
                                   env={"GREETING": "hi"})
    fds, env = out.split("---\n")
    assert fds.split() == ["0", "1", "2"]
    names = {line.split("=", 1)[0] for line in env.splitlines()}
    assert names == {"GREETING", "HOME", "HOSTNAME", "PATH", "PWD", "SHLVL"}


def test_base_rootfs_is_unchanged_after_a_job_writes_everywhere(runtime, rootfs, tmp_path):
    def snapshot() -> dict[str, tuple[int, int, int]]:
        tree = {}
        for dirpath, dirnames, filenames in os.walk(rootfs):
            for name in dirnames + filenames:
                st = os.lstat(os.path.join(dirpath, name))
                tree[os.path.join(dirpath, name)] = (st.st_mode, st.st_size, st.st_mtime_ns)
        return tree

    before = snapshot()
    result, out, err = run_capturing(
        runtime, tmp_path, rootfs,
        "echo x > /bin/new; rm /etc/passwd; rm -rf /usr; mkdir -p /root/deep/dir; echo y >> /etc/hosts;"
        " chmod 000 /bin; echo wrote")
    assert out.strip() == "wrote" and result.exit_code == 0, err
    assert snapshot() == before
    # A later job starts from the pristine base again.
    result, out, _ = run_capturing(runtime, tmp_path, rootfs, "test -e /bin/new || test ! -e /etc/passwd || echo pristine")
    assert out.strip() == "pristine"


def test_stdin_data_reaches_the_job_and_streams_go_to_their_files(runtime, rootfs, tmp_path):
    result, out, err = run_capturing(runtime, tmp_path, rootfs, "tr a-z A-Z; echo oops >&2",
                                     stdin_data=b"hello stdin\n")
    assert out == "HELLO STDIN\n"
    assert err == "oops\n"


def test_exit_code_is_reported(runtime, rootfs, tmp_path):
    result, _, _ = run_capturing(runtime, tmp_path, rootfs, "exit 42")
    assert (result.status, result.exit_code, result.signal) == ("EXITED", 42, None)
    assert result.cpu_seconds is not None and result.peak_memory_bytes


def test_death_by_signal_is_reported(runtime, rootfs, tmp_path):
    # PID 1 ignores signals it has no handler for, so the job's child does the dying
    # and the shell re-raises nothing; a plain `kill -SEGV $$` would be ignored.
    result, _, _ = run_capturing(runtime, tmp_path, rootfs, "sh -c 'kill -SEGV $$'; exit $?")
    assert result.status == "EXITED" and result.exit_code == 128 + signal.SIGSEGV


# -- limits ---------------------------------------------------------------------------

def test_memory_hog_is_oom_killed_and_reported(runtime, rootfs, tmp_path):
    result, _, _ = run_capturing(runtime, tmp_path, rootfs,
                                 "x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived",
                                 memory_bytes=32 << 20)
    assert result.status == "OOM_KILLED"
    assert result.oom_kills >= 1
    assert result.peak_memory_bytes is not None and result.peak_memory_bytes >= 24 << 20
    assert "OOM" in result.error


def test_files_a_job_writes_fill_a_disk_of_half_its_memory_limit(runtime, rootfs, tmp_path):
    # The writable layer and /tmp share one tmpfs in the job's own mount namespace, charged
    # to its memory and capped at half its limit: a job that fills it gets ENOSPC, as from a
    # full disk, with the other half of its memory left for its processes.
    command = ("dd if=/dev/zero of=/root/big bs=1M count=100; echo $?; dd if=/dev/zero of=/tmp/big bs=1M count=100; "
               "du -sk /root/big /tmp/big")
    result, out, err = run_capturing(runtime, tmp_path, rootfs, command, memory_bytes=32 << 20)
    assert (result.status, result.oom_kills) == ("EXITED", 0) and "No space left on device" in err
    first, *sizes = out.strip().split("\n")
    used = sum(int(line.split()[0]) for line in sizes)
    assert first == "1" and 15 << 10 <= used <= 16 << 10  # KiB: the two files share the 16 MiB
    result, out, _ = run_capturing(runtime, tmp_path, rootfs,
                                   "head -c 10000000 /dev/zero > /root/big; wc -c < /root/big", memory_bytes=64 << 20)
    assert (result.status, out.strip()) == ("EXITED", "10000000")


def test_job_under_its_memory_limit_is_not_oom_killed(runtime, rootfs, tmp_path):
    result, out, _ = run_capturing(runtime, tmp_path, rootfs, "x=$(head -c 1000000 /dev/zero | tr '\\0' x); echo ok",
                                   memory_bytes=64 << 20)
    assert (result.status, out.strip(), result.oom_kills) == ("EXITED", "ok", 0)


def test_fork_bomb_stays_inside_its_pids_limit_and_host_is_unaffected(runtime, rootfs, tmp_path):
    bomb = spec(rootfs, "b() { b | b & }; b; sleep 30", pids=16, timeout=3, grace=0.5,
                stdout_path="/dev/null", stderr_path="/dev/null")
    runtime.launcher.submit(bomb)
    cgroup = detect(parent=runtime.cgroup_parent).open(bomb.job_id)
    counts = [0]
    while bomb.job_id in runtime.launcher.running():
        try:
            counts.append(len(cgroup.pids()))
        except FileNotFoundError:
            break  # the job ended between the check and the read
        # While the bomb runs, the host still forks and runs processes normally.
        assert subprocess.run(["/bin/true"], timeout=10).returncode == 0
    assert max(counts) <= 16  # never past its limit
    # Its PID 1 may itself fail to fork once the bomb has the limit, and exit early.
    assert runtime.launcher.wait(bomb.job_id, timeout=60).status in ("TIMED_OUT", "EXITED")


def test_pids_limit_stops_the_process_past_it(runtime, rootfs, tmp_path):
    result, out, err = run_capturing(runtime, tmp_path, rootfs,
                                     "for i in 1 2 3 4 5; do sleep 30 & echo started $i; done; wait", pids=4)
    assert out.split("\n")[:3] == ["started 1", "started 2", "started 3"]  # the shell + 3 = 4
    assert "started 4" not in out
    assert "can't fork" in err
    assert (result.status, result.exit_code) == ("EXITED", 2)


def test_cpu_quota_shows_in_cpu_usage(runtime, rootfs, tmp_path):
    busy = "while :; do :; done"
    limited = runtime.launcher.run(spec(rootfs, busy, cpus=0.2, timeout=1.5, grace=0), timeout=60)
    unlimited = runtime.launcher.run(spec(rootfs, busy, timeout=1.5, grace=0), timeout=60)
    assert limited.status == unlimited.status == "TIMED_OUT"
    # 1.5 s at 20 % of one core is 0.3 s of CPU; without a quota the loop takes ~1.5 s.
    assert limited.cpu_seconds < 0.6 < unlimited.cpu_seconds


# -- kill, timeout --------------------------------------------------------------------

def test_kill_sends_sigterm_first(runtime, rootfs, tmp_path):
    job = spec(rootfs, "trap 'echo got TERM; exit 3' TERM; echo ready; while :; do sleep 0.05; done",
               stdout_path=str(tmp_path / "out"))
    started = threading.Event()
    runtime.launcher.submit(job)
    wait_for_output(tmp_path / "out", "ready")
    runtime.launcher.kill(job.job_id)
    result = runtime.launcher.wait(job.job_id, timeout=60)
    assert (result.status, result.exit_code) == ("KILLED", 3)
    assert "got TERM" in (tmp_path / "out").read_text()
    del started


def test_kill_escalates_to_sigkill_after_grace_for_every_process(runtime, rootfs, tmp_path):
    job = spec(rootfs, "trap '' TERM; for i in 1 2 3; do sh -c \"trap '' TERM; sleep 600\" & done; echo ready; wait",
               grace=0.5, stdout_path=str(tmp_path / "out"))
    runtime.launcher.submit(job)
    wait_for_output(tmp_path / "out", "ready")
    runtime.launcher.kill(job.job_id)
    result = runtime.launcher.wait(job.job_id, timeout=60)
    assert (result.status, result.signal) == ("KILLED", signal.SIGKILL)


def test_timeout_kills_and_reports_timed_out(runtime, rootfs, tmp_path):
    result = runtime.launcher.run(spec(rootfs, "sleep 600", timeout=0.5, grace=0.5), timeout=60)
    assert result.status == "TIMED_OUT"
    assert "timed out after 0.5 s" in result.error


def test_lone_pid_1_without_a_sigterm_handler_is_not_waited_for(runtime, rootfs):
    # `sleep` exec'd as the job's PID 1 cannot receive SIGTERM; a 600 s grace period
    # would only delay the end, so the runtime goes straight to SIGKILL.
    result = runtime.launcher.run(RuntimeSpec(uuid.uuid4().hex, ["/bin/sleep", "600"], rootfs,
                                              timeout=0.3, grace=600), timeout=60)
    assert (result.status, result.signal) == ("TIMED_OUT", signal.SIGKILL)


def test_kill_right_after_submit_never_misses_the_job(runtime, rootfs):
    # The kill may arrive before the job has joined its cgroup or exec'd.
    for _ in range(20):
        job = spec(rootfs, "sleep 600")
        runtime.launcher.submit(job)
        runtime.launcher.kill(job.job_id, grace=0)
        assert runtime.launcher.wait(job.job_id, timeout=60).status == "KILLED"


def test_kill_of_unknown_job_is_a_no_op(runtime):
    runtime.launcher.kill(uuid.uuid4().hex)


# -- failures before exec ---------------------------------------------------------------

@pytest.mark.parametrize("argv, reason", [
    (["no-such-command"], "find command: command not found in the rootfs: no-such-command"),
    (["/bin/nope", "x"], "find command: command not found in the rootfs: /bin/nope"),
    (["/etc/passwd"], "find command: command not found in the rootfs: /etc/passwd"),
])
def test_command_not_in_rootfs_is_failed_with_reason(runtime, rootfs, argv, reason):
    result = runtime.launcher.run(RuntimeSpec(uuid.uuid4().hex, argv, rootfs), timeout=60)
    assert (result.status, result.error, result.exit_code) == ("FAILED", reason, None)


def test_missing_rootfs_is_failed_with_reason(runtime):
    result = runtime.launcher.run(RuntimeSpec(uuid.uuid4().hex, ["/bin/true"], "/var/tmp/no-such-rootfs"), timeout=60)
    assert result.status == "FAILED"
    assert result.error == "rootfs: rootfs /var/tmp/no-such-rootfs does not exist (build it with `make rootfs`)"


def test_a_missing_working_directory_is_made_in_the_writable_layer_as_the_jobs_root(runtime, rootfs, tmp_path):
    """As runc and Docker's WORKDIR do: the directories are the job's own (its root's, also
    with a user namespace), and they go with its writable layer."""
    result, out, err = run_capturing(runtime, tmp_path, rootfs, "pwd; stat -c '%u %a' /nope /nope/deeper; touch mine",
                                     cwd="/nope/deeper")
    assert (result.status, result.exit_code, err) == ("EXITED", 0, "")
    assert out.splitlines() == ["/nope/deeper", "0 755", "0 755"]
    assert not os.path.exists(os.path.join(rootfs, "nope"))


def test_a_working_directory_that_cannot_be_made_is_failed_with_reason(runtime, rootfs):
    result = runtime.launcher.run(RuntimeSpec(uuid.uuid4().hex, ["/bin/true"], rootfs, cwd="/bin/busybox/x"), timeout=60)
    assert (result.status, result.error) == ("FAILED", "directory /bin/busybox/x: openat2(/bin/busybox): Not a directory")


def test_unwritable_log_path_is_failed_with_reason(runtime, rootfs):
    result = runtime.launcher.run(spec(rootfs, "true", stdout_path="/proc/no/such/dir/out"), timeout=60)
    assert result.status == "FAILED"
    assert result.error.startswith("log file: cannot open /proc/no/such/dir/out")


@pytest.mark.parametrize("field, value, message", [
    ("memory_bytes", 1000, "memory limit must be between 1 MiB and 1 PiB, not 1000 bytes"),
    ("pids", 0, "pids limit must be between 1"),
    ("cpus", 1000.0, "cpus must be between 0.01 and"),
    ("timeout", -1.0, "timeout must be more than 0 and at most 365 days"),
    ("timeout", 600 * 3600 * 24.0, "at most 365 days"),
    ("argv", [], "empty command"),
])
def test_bad_limits_are_refused_before_anything_starts(runtime, rootfs, field, value, message):
    job = RuntimeSpec(uuid.uuid4().hex, ["/bin/true"], rootfs)
    setattr(job, field, value)
    with pytest.raises(InvalidSpec, match=message):
        runtime.launcher.submit(job)


# -- many jobs, events, shutdown -----------------------------------------------------------

def test_50_jobs_at_once_all_finish_with_their_own_output(runtime, rootfs, tmp_path):
    jobs = [spec(rootfs, f"echo job-{n}; sleep 0.2", stdout_path=str(tmp_path / f"{n}.out")) for n in range(50)]
    for job in jobs:
        runtime.launcher.submit(job)
    results = [runtime.launcher.wait(job.job_id, timeout=120) for job in jobs]
    assert [r.status for r in results] == ["EXITED"] * 50
    assert [(tmp_path / f"{n}.out").read_text() for n in range(50)] == [f"job-{n}\n" for n in range(50)]


def test_events_report_start_then_finish(rootfs, tmp_path):
    events: list[object] = []
    with Launcher(tmp_path / "state", cgroup_parent=f"lclusterd-test-ev-{os.getpid()}", on_event=events.append) as launcher:
        job = spec(rootfs, "true")
        result = launcher.run(job, timeout=60)
    assert isinstance(events[0], JobStarted) and events[0].job_id == job.job_id
    assert events[0].host_pid == result.host_pid
    assert isinstance(events[1], JobFinished) and events[1].result == result
    assert cgroup_parent_dirs(f"lclusterd-test-ev-{os.getpid()}") == []


def test_close_kills_running_jobs_and_cleans_up(rootfs, tmp_path):
    parent = f"lclusterd-test-close-{os.getpid()}"
    launcher = Launcher(tmp_path / "state", cgroup_parent=parent)
    launcher.start()
    job = spec(rootfs, "sleep 600", grace=0.2)
    launcher.submit(job)
    launcher.close()
    assert launcher.wait(job.job_id).status == "KILLED"
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["root"]
    assert cgroup_parent_dirs(parent) == []  # removed with its last job


def test_sweep_after_a_crashed_helper_removes_its_jobs(rootfs, tmp_path):
    parent = f"lclusterd-test-sweep-{os.getpid()}"
    crashed = Launcher(tmp_path / "state", cgroup_parent=parent)
    crashed.start()
    job = spec(rootfs, "echo ready; sleep 600", stdout_path=str(tmp_path / "out"))
    crashed.submit(job)
    wait_for_output(tmp_path / "out", "ready")
    job_pid = next(iter_pids_of(parent))
    os.kill(crashed.helper_pid, signal.SIGKILL)  # the job outlives its helper
    assert crashed.wait(job.job_id, timeout=30).status == "FAILED"
    assert pid_alive(job_pid)
    with Launcher(tmp_path / "state", cgroup_parent=parent) as fresh:
        assert fresh.sweep() == [job.job_id]
    assert not pid_alive(job_pid)
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["root"]
    assert cgroup_parent_dirs(parent) == []  # removed with its last job


# -- the runtime CLI ---------------------------------------------------------------------------

def runtime_cli(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lclusterd.runtime", "run", *args],
                          capture_output=True, text=True, timeout=60, **kw)


def test_cli_runs_a_command_and_exits_with_its_status(runtime, rootfs):
    done = runtime_cli("--rootfs", rootfs, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert done.returncode == 7
    assert done.stdout == "out\n"
    assert done.stderr.startswith("err\nlclusterd.runtime: EXITED exit_code=7 ")


def test_cli_json_result_and_limits(runtime, rootfs, tmp_path):
    done = runtime_cli("--rootfs", rootfs, "--mem", "32M", "--pids", "8", "--cpus", "0.5", "--timeout", "30s",
                       "--stdout", str(tmp_path / "o"), "--stderr", str(tmp_path / "e"), "--json", "--sh", "echo hi")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "EXITED" and result["exit_code"] == 0
    assert (tmp_path / "o").read_text() == "hi\n"


@pytest.mark.parametrize("args, code, line", [
    (["--mem", "12X", "--", "true"], 2, "Error: bad --mem value '12X': expected a size like 64M or 1G"),
    (["--timeout", "soon", "--", "true"], 2, "Error: bad --timeout value 'soon': expected a duration like 30s, 5m or 1h"),
    (["--cpus", "0", "--", "true"], 2, "Error: cpus must be between 0.01 and"),
    (["--"], 2, "Error: give either a command after -- or --sh 'command line'"),
    (["--", "no-such-command"], 125, "lclusterd.runtime: FAILED"),
    (["--timeout", "0.3s", "--grace", "0", "--", "sleep", "60"], 124, "lclusterd.runtime: TIMED_OUT"),
])
def test_cli_errors_are_one_line_and_an_exit_code(runtime, rootfs, args, code, line):
    done = runtime_cli("--rootfs", rootfs, *args)
    assert done.returncode == code
    assert line in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr


# -- helpers ------------------------------------------------------------------------------

def wait_for_output(path: Path, text: str, timeout: float = 30) -> None:
    deadline = __import__("time").monotonic() + timeout
    while __import__("time").monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        __import__("time").sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


def iter_pids_of(parent: str):
    driver = detect(parent=parent)
    for name in driver.job_names():
        yield from driver.open(name).pids()


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False
