"""The REAL cgroup driver of this host: detect() on /sys/fs/cgroup, as root.

A hybrid or v1 host gets the v1 driver and a pure cgroup v2 host (or ../shared/v2vm) the
v2 driver; the test ids say which ran: [cgroup-v1-real] or [cgroup-v2-real]. Everything
lives under a parent of its own, lclusterd-test-cgroups-<pid> or lclusterd-devtest-<pid>...,
and every test leaves no cgroup directory and no process behind (checked in the fixtures).

The device tests run a probe process that joins a job's cgroups the way a job's init does
(its procs files and the driver's device_procs_files) and then opens and mknods devices.
The BPF device program is also tested on its own on the host's cgroup2 mount (the unified
one of a hybrid host, where it attaches without any controller).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lclusterd.runtime import bpf, devices
from lclusterd.runtime.cgroups import Limits, NodeLimits, cgroup_version, detect, device_filter, v2

ROOT = Path("/sys/fs/cgroup")
PARENT = f"lclusterd-test-cgroups-{os.getpid()}"  # apart from conftest's runtime
DEVTEST = f"lclusterd-devtest-{os.getpid()}"  # the device and node-limit tests' cgroups start so
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


# Forks up to 10 children that sleep, until a fork fails; prints how many it made.
FORKER = """
import os, time
n = 0
for _ in range(10):
    try:
        pid = os.fork()
    except BlockingIOError:
        break
    if pid == 0:
        os.close(1)
        time.sleep(60)
        os._exit(0)
    n += 1
print(n)
"""


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
    proc = jobs.spawn(job, [sys.executable, "-c", FORKER], stdout=subprocess.PIPE, text=True)
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


# ---- devices and node ceilings ----

# Joins the cgroups whose procs files it is given, then runs each op and prints its errno
# (0: it worked): ["open", path, "r"|"w"] or ["mknod", path, "b"|"c", major, minor].
PROBE = r"""
import json, os, stat, sys
procs_files, ops = json.loads(sys.argv[1])
for procs in procs_files:
    with open(procs, "w") as f:
        f.write("0")
results = []
for op, path, *args in ops:
    try:
        if op == "open":
            os.close(os.open(path, os.O_RDONLY if args[0] == "r" else os.O_WRONLY))
        else:
            kind, major, minor = args
            os.mknod(path, (stat.S_IFCHR if kind == "c" else stat.S_IFBLK) | 0o600, os.makedev(major, minor))
            os.unlink(path)
        results.append(0)
    except OSError as e:
        results.append(e.errno)
print(json.dumps(results))
"""


def probe(procs_files: list[str], ops: list[list]) -> list[int]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps([procs_files, ops])],
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout)


@pytest.fixture
def node_dir(tmp_path):
    """A directory of the test's own for device nodes, on a filesystem that lets them be
    opened: with nodev (a tmpfs /tmp may have it) an open fails with EACCES before any
    device rule is asked."""
    for candidate in (tmp_path, Path("/var/tmp"), Path(__file__).resolve().parent):
        if not os.statvfs(candidate).f_flag & os.ST_NODEV:
            break
    else:
        pytest.fail("no directory on a filesystem without nodev for the test's device nodes")
    path = Path(tempfile.mkdtemp(prefix="lclusterd-devtest-nodes-", dir=candidate))
    yield path
    shutil.rmtree(path)


def device_ops(node_dir: Path) -> list[list]:
    """The probe's attacks and the job's everyday devices. The loop device node is made
    here, outside any device rule."""
    for old in node_dir.iterdir():  # a previous probe's
        old.unlink()
    loop = node_dir / "loop0"
    os.mknod(loop, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    return [
        ["open", "/dev/kmsg", "w"],  # the host's kernel log
        ["open", str(loop), "r"],  # a block device
        ["mknod", str(node_dir / "kmsg"), "c", 1, 11],
        ["mknod", str(node_dir / "sda"), "b", 8, 0],
        ["open", "/dev/null", "w"],
        ["open", "/dev/urandom", "r"],
        ["mknod", str(node_dir / "null"), "c", 1, 3],
    ]


DENIED = [errno.EPERM] * 4 + [0] * 3  # for device_ops: the first four refused, the rest work


def devtest_leftovers() -> list[Path]:
    """Directories of this module's device tests in any hierarchy or cgroup2 mount."""
    return sorted(p for pattern in (f"{DEVTEST}*", f"*/{DEVTEST}*") for p in ROOT.glob(pattern))


@pytest.fixture
def no_devtest_leftovers():
    assert devtest_leftovers() == []
    yield
    assert devtest_leftovers() == [], "a device test left cgroups behind"


def test_probe_reaches_host_devices_outside_a_job(node_dir):
    # The control: without the job's cgroups the same ops work (a loop node says ENXIO
    # where no loop module is loaded: the open got past every permission check).
    results = probe([], device_ops(node_dir))
    assert results[1] in (0, errno.ENXIO) and results[:1] + results[2:] == [0] * 6


def test_a_job_cannot_reach_host_devices(driver, jobs, node_dir):
    job = jobs.create()
    assert probe(job.procs_files + driver.device_procs_files(), device_ops(node_dir)) == DENIED
    if driver.version == 1:  # the rules sit on the parent, and the job has no devices directory
        rules = (ROOT / "devices" / PARENT / "devices.list").read_text().splitlines()
        assert rules == [rule.v1_line() for rule in devices.ALLOWED]
        assert "devices" not in job.dirs
        assert driver.device_procs_files() == [str(ROOT / "devices" / PARENT / "cgroup.procs")]
    else:
        assert driver.device_procs_files() == []


@pytest.fixture(params=[cgroup_version(ROOT)], ids=lambda v: f"cgroup-v{v}-real")
def node_driver(request, no_devtest_leftovers):
    """A driver for a node's parent, DEVTEST/node, with every directory removed after."""
    driver = detect(ROOT, parent=f"{DEVTEST}/node")
    assert driver.version == request.param
    yield driver
    for name in driver.job_names():
        job = driver.open(name)
        job.kill_all()
        job.remove()
    driver.remove_parent()


def node_dirs(driver) -> tuple[Path, Path]:
    """The node's cgroup in the memory and in the pids hierarchy (one directory in v2)."""
    if driver.version == 1:
        return driver.hierarchies["memory"] / driver.parent, driver.hierarchies["pids"] / driver.parent
    return driver.parent_dir, driver.parent_dir


def test_node_ceilings_are_in_the_kernel_files_and_hold_for_jobs(node_driver, node_dir):
    node_driver.prepare(NodeLimits(memory_bytes=256 * MIB, pids=5))
    memory, pids = node_dirs(node_driver)
    swap = {1: "memory.memsw.limit_in_bytes", 2: "memory.swap.max"}[node_driver.version]
    expected = {"memory.limit_in_bytes" if node_driver.version == 1 else "memory.max": str(256 * MIB)}
    if (memory / swap).exists():
        expected[swap] = str(256 * MIB) if node_driver.version == 1 else "0"
    assert {name: read(memory / name) for name in expected} == expected
    assert read(pids / "pids.max") == "5"
    # On the node's own cgroup only, not on DEVTEST above it.
    if node_driver.version == 1:
        unlimited = read(ROOT / "memory" / "memory.limit_in_bytes")  # the root's, never limited
        assert read(memory.parent / "memory.limit_in_bytes") == unlimited
    else:
        assert read(memory.parent / "memory.max") == "max"
    assert read(pids.parent / "pids.max") == "max"
    # A job with no pids limit of its own is held by the node's: python + 4 children.
    job = node_driver.create("job1", Limits())
    proc = subprocess.Popen([sys.executable, "-c", FORKER], preexec_fn=job.join_self, stdout=subprocess.PIPE,
                            text=True)
    try:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and int(out) == 4
    finally:
        job.kill_all()
        proc.wait(timeout=30)
    assert probe(job.procs_files + node_driver.device_procs_files(), device_ops(node_dir)) == DENIED


def test_prepare_again_keeps_one_set_of_device_rules(node_driver, node_dir):
    node_driver.prepare()
    if node_driver.version == 2:
        first = bpf.attached_device_programs(str(node_driver.parent_dir))
    node_driver.prepare()  # a restart: v1 leaves the rules alone, v2 replaces the program
    if node_driver.version == 1:
        assert read(node_driver.devices_dir / "devices.list").splitlines() == [r.v1_line() for r in devices.ALLOWED]
    else:
        flags, ids = bpf.attached_device_programs(str(node_driver.parent_dir))
        assert flags == 0 and len(ids) == 1 and ids != first[1]
    job = node_driver.create("job1", Limits())
    assert probe(job.procs_files + node_driver.device_procs_files(), device_ops(node_dir)) == DENIED


# The host's cgroup2 mount: the root on a pure v2 host, `unified` on a hybrid one.
CGROUP2_MOUNT = ROOT if cgroup_version(ROOT) == 2 else ROOT / "unified"


@pytest.mark.parametrize("mount", [CGROUP2_MOUNT], ids=lambda m: f"cgroup2-at-{m.name}-real")
def test_bpf_device_program_holds_for_the_cgroup_and_everything_below(mount, no_devtest_leftovers, node_dir):
    assert (mount / "cgroup.controllers").exists(), f"no cgroup2 mount at {mount}"
    top = mount / f"{DEVTEST}-bpf"
    before, after = top / "before", top / "after"  # made before and after the attach
    os.mkdir(top)
    try:
        os.mkdir(before)
        # A program left by an earlier run (allows everything) is replaced, not added to.
        stale = bpf.load_device_program(device_filter.insn(device_filter.ALU64_MOV_K, 0, imm=1)
                                        + device_filter.insn(device_filter.EXIT), "lclusterd_stale")
        try:
            bpf.attach_device_program(str(top), stale)
            assert probe([str(top / "cgroup.procs")], [["open", "/dev/kmsg", "w"]]) == [0]
            v2.attach_device_filter(top)
            os.mkdir(after)
            flags, ids = bpf.attached_device_programs(str(top))
            assert flags == 0 and len(ids) == 1
            # Attached with flags 0, so nothing below can attach a program of its own.
            with pytest.raises(OSError, match=r"ATTACH, .*/after, BPF_CGROUP_DEVICE\): Operation not permitted"):
                bpf.attach_device_program(str(after), stale)
        finally:
            os.close(stale)
        for cgroup in (top, before, after):
            assert probe([str(cgroup / "cgroup.procs")], device_ops(node_dir)) == DENIED, cgroup
    finally:
        for d in (after, before, top):
            if d.exists():
                os.rmdir(d)


def test_a_refused_bpf_program_says_why():
    # r0 is never set before exit: the verifier refuses the program and its log comes back.
    with pytest.raises(OSError, match=r"bpf\(BPF_PROG_LOAD, cgroup_device bad\): .*\(verifier: .*R0 !read_ok"):
        bpf.load_device_program(device_filter.insn(device_filter.EXIT), "bad")
