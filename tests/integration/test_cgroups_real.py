"""The REAL cgroup driver of this host: detect() on /sys/fs/cgroup, as root.

A hybrid or v1 host gets the v1 driver and a pure cgroup v2 host (or ../shared/v2vm) the
v2 driver; the test ids say which ran: [cgroup-v1-real] or [cgroup-v2-real]. Everything
lives under a parent of its own, lclusterd-test-cgroups-<pid>, and every test leaves no cgroup
directory and no process behind (checked in the fixtures).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lclusterd.runtime.cgroups import Limits, cgroup_version, detect

ROOT = Path("/sys/fs/cgroup")
PARENT = f"lclusterd-test-cgroups-{os.getpid()}"  # apart from conftest's runtime
MIB = 1 << 20

pytestmark = [
    pytest.mark.v2vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="creating cgroups needs root"),
]


def wait_for(predicate, timeout: float = 30.0) -> bool:
    """Poll until predicate() holds; a bound against hanging, not a timing check."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read(path: Path) -> str:
    return path.read_text().strip()


def read_key(path: Path, key: str) -> int:
    return dict(line.split() for line in path.read_text().splitlines())[key]


def parent_dirs(driver) -> list[Path]:
    if driver.version == 1:
        return list(dict.fromkeys(h / driver.parent for h in driver.hierarchies.values()))
    return [driver.parent_dir]


def job_dirs(job) -> list[Path]:
    return job.unique_dirs if hasattr(job, "unique_dirs") else [job.path]


def kernel_file(driver, job, controller: str, name: str) -> Path:
    return job.dirs[controller] / name if driver.version == 1 else job.path / name


@pytest.fixture(scope="module", params=[cgroup_version(ROOT)], ids=lambda v: f"cgroup-v{v}-real")
def driver(request):
    driver = detect(ROOT, parent=PARENT)
    assert driver.version == request.param  # the label above is what detect() chose
    yield driver
    for name in driver.job_names():  # only after a failed test's own clean-up
        job = driver.open(name)
        job.kill_all()
        job.remove()
    for d in parent_dirs(driver):
        if d.exists():
            os.rmdir(d)
    assert not any(d.exists() for d in parent_dirs(driver))


class Jobs:
    """Creates job cgroups and processes for one test, and removes them after it."""

    def __init__(self, driver):
        self.driver = driver
        self.cgroups = []
        self.procs: list[subprocess.Popen] = []

    def create(self, limits: Limits = Limits()):
        job = self.driver.create(f"job{len(self.cgroups)}", limits)
        self.cgroups.append(job)
        return job

    def spawn(self, job, argv: list[str], **kw) -> subprocess.Popen:
        """Fork, join the job's cgroup in the child (join_self) and exec argv."""
        proc = subprocess.Popen(argv, preexec_fn=job.join_self, **kw)
        self.procs.append(proc)
        return proc

    def clean_up(self) -> None:
        for job in self.cgroups:
            job.kill_all()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for job in self.cgroups:
            assert job.is_empty(), f"processes left in {job.name}: {job.pids()}"
            job.remove()
            assert not any(d.exists() for d in job_dirs(job))
        assert self.driver.job_names() == []


@pytest.fixture
def jobs(driver):
    jobs = Jobs(driver)
    yield jobs
    jobs.clean_up()


def test_limits_written(driver, jobs):
    job = jobs.create(Limits(memory_bytes=64 * MIB, cpus=0.5, pids=16))
    if driver.version == 1:
        expected = {
            ("memory", "memory.limit_in_bytes"): str(64 * MIB),
            ("pids", "pids.max"): "16",
            ("cpu", "cpu.cfs_period_us"): "100000",
            ("cpu", "cpu.cfs_quota_us"): "50000",
        }
        if kernel_file(driver, job, "memory", "memory.memsw.limit_in_bytes").exists():
            expected["memory", "memory.memsw.limit_in_bytes"] = str(64 * MIB)
    else:
        expected = {
            ("memory", "memory.max"): str(64 * MIB),
            ("pids", "pids.max"): "16",
            ("cpu", "cpu.max"): "50000 100000",
        }
        if kernel_file(driver, job, "memory", "memory.swap.max").exists():
            expected["memory", "memory.swap.max"] = "0"
    assert {key: read(kernel_file(driver, job, *key)) for key in expected} == expected


def test_no_limits_keeps_kernel_defaults(driver, jobs):
    job = jobs.create(Limits())
    if driver.version == 1:
        assert read(kernel_file(driver, job, "pids", "pids.max")) == "max"
        assert "cpu" not in job.dirs  # no CPU limit: the cpu hierarchy is not joined
    else:
        assert read(job.path / "memory.max") == "max"
        assert read(job.path / "pids.max") == "max"
        assert read(job.path / "cpu.max") == "max 100000"


def test_child_joins_with_join_self_and_sigterm_ends_it(driver, jobs):
    job = jobs.create()
    child = jobs.spawn(job, ["sleep", "30"])
    assert job.pids() == [child.pid]  # joined before exec, so already there
    cgroup_lines = Path(f"/proc/{child.pid}/cgroup").read_text()
    assert f"/{PARENT}/{job.name}\n" in cgroup_lines
    job.signal_all(signal.SIGTERM)
    assert child.wait(timeout=30) == -signal.SIGTERM
    assert wait_for(job.is_empty)


def test_child_joins_through_procs_files(driver, jobs):
    job = jobs.create()
    joins = "; ".join(f"echo 0 > {f}" for f in job.procs_files)
    child = subprocess.Popen(["/bin/sh", "-c", f"{joins}; exec sleep 30"])
    jobs.procs.append(child)
    assert wait_for(lambda: job.pids() == [child.pid])
    job.signal_all(signal.SIGTERM)
    assert child.wait(timeout=30) == -signal.SIGTERM


def test_memory_hog_is_oom_killed(driver, jobs):
    job = jobs.create(Limits(memory_bytes=32 * MIB))
    hog = jobs.spawn(job, [sys.executable, "-c", "b = b'x' * (200 * 2**20)"],
                     stderr=subprocess.DEVNULL)
    assert hog.wait(timeout=120) == -signal.SIGKILL
    stats = job.stats()
    assert stats.oom_kills >= 1
    assert stats.peak_memory_bytes is None or 0 < stats.peak_memory_bytes <= 32 * MIB


def test_pids_limit_stops_forks(driver, jobs):
    job = jobs.create(Limits(pids=5))
    # The python process is one task, so 4 children fit and the 5th fork fails (EAGAIN).
    forker = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(10):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except BlockingIOError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        os.close(1)\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "    n += 1\n"
        "print(n)\n"
    )
    proc = jobs.spawn(job, [sys.executable, "-c", forker], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and int(out) == 4
    assert len(job.pids()) == 4  # the children sleep on; kill_all ends them in clean-up
    events = kernel_file(driver, job, "pids", "pids.events")
    if events.exists():
        assert int(read_key(events, "max")) >= 1


def test_kill_all_empties_cgroup(driver, jobs):
    job = jobs.create()
    shell = jobs.spawn(job, ["/bin/sh", "-c", "sleep 30 & sleep 30 & sleep 30 & wait"])
    assert wait_for(lambda: len(job.pids()) == 4)
    job.kill_all()
    assert job.is_empty()
    assert shell.wait(timeout=30) == -signal.SIGKILL


def test_kill_all_stops_a_forking_loop(driver, jobs):
    # New processes appear all the time; freezing (v1) or cgroup.kill (v2) catches them.
    job = jobs.create(Limits(pids=64))
    jobs.spawn(job, ["/bin/sh", "-c", "while :; do sleep 30 & done"], stderr=subprocess.DEVNULL)
    assert wait_for(lambda: len(job.pids()) >= 10)
    job.kill_all()
    assert job.is_empty()


def test_freeze_and_kill_stops_a_forking_loop(driver, jobs):
    # v2's path on kernels without cgroup.kill (< 5.14); v1 has no freezer path.
    if driver.version == 1:
        pytest.skip("v1 has no freezer path: its kill_all kills the job's PID-namespace init")
    job = jobs.create(Limits(pids=64))
    jobs.spawn(job, ["/bin/sh", "-c", "while :; do sleep 30 & done"], stderr=subprocess.DEVNULL)
    assert wait_for(lambda: len(job.pids()) >= 10)
    job.freeze_and_kill()
    assert job.is_empty()


def test_stats_after_exit(driver, jobs):
    job = jobs.create(Limits(memory_bytes=256 * MIB))
    proc = jobs.spawn(job, [sys.executable, "-c", "b = b'x' * (16 * 2**20); sum(range(10**6))"])
    assert proc.wait(timeout=120) == 0
    stats = job.stats()
    assert stats.oom_kills == 0
    assert stats.cpu_seconds is not None and stats.cpu_seconds > 0
    assert stats.peak_memory_bytes is None or stats.peak_memory_bytes >= 16 * MIB


def test_remove_leaves_no_directory(driver, jobs):
    job = driver.create("removed", Limits(memory_bytes=64 * MIB, pids=8, cpus=1))
    proc = jobs.spawn(job, ["true"])
    assert proc.wait(timeout=30) == 0
    assert driver.job_names() == ["removed"]
    job.remove()
    assert not any(d.exists() for d in job_dirs(job))
    assert driver.job_names() == []
    job.remove()  # again: missing directories are fine
