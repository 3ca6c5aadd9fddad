"""Both cgroup drivers on FAKE file trees under tmp_path: no root, no kernel.

FakeCgroupFs plays the kernel's part for directories: mkdir in a hierarchy creates the
control files the kernel would (in v2 only those of controllers the parent enables),
rmdir removes them, a write to cgroup.subtree_control applies "+memory"-style
changes, v1's devices.deny and devices.allow update devices.list, v1's memory limits
keep memsw >= limit, and v2's BPF device program attach is recorded. Each test's name
says which driver and that it is fake ("-fake", "_fake"). The BPF device program itself
runs here in a small interpreter. The real drivers are tested in
tests/integration/test_cgroups_real.py.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from lclusterd.errors import SetupFailed
from lclusterd.runtime import devices, mounts
from lclusterd.runtime.cgroups import CgroupStats, Limits, NodeLimits, V1Driver, V2Driver, detect, v1, v2
from lclusterd.runtime.cgroups import device_filter

UNLIMITED_V1 = "9223372036854771712"
V1_FILES = {
    "memory": {
        "memory.limit_in_bytes": UNLIMITED_V1,
        "memory.memsw.limit_in_bytes": UNLIMITED_V1,
        "memory.max_usage_in_bytes": "0",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0",
    },
    "pids": {"pids.max": "max", "pids.current": "0"},
    "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1"},
    "cpuacct": {"cpuacct.usage": "0"},
    "freezer": {"freezer.state": "THAWED"},
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm"},
}
V2_FILES = {
    "": {
        "cgroup.subtree_control": "",
        "cgroup.events": "populated 0\nfrozen 0",
        "cgroup.freeze": "0",
        "cgroup.kill": "",
        "cpu.stat": "usage_usec 0\nuser_usec 0\nsystem_usec 0",
    },
    "memory": {
        "memory.max": "max",
        "memory.swap.max": "max",
        "memory.peak": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0",
    },
    "pids": {"pids.max": "max"},
    "cpu": {"cpu.max": "max 100000"},
}
V2_ROOT_CONTROLLERS = "cpuset cpu io memory hugetlb pids rdma misc"
V1_DEFAULT = ("memory", "pids", "cpu", "cpuacct", "freezer", "devices")
ALLOWED_LINES = ["c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:2 rwm",
                 "c 136:* rwm"]


def write(path: Path, text: str) -> None:
    path.write_text(text + "\n" if text else "")


def read(path: Path) -> str:
    return path.read_text().strip()


class FakeCgroupFs:
    """A directory tree that acts like cgroupfs for mkdir, rmdir, subtree_control, v1
    device rules and memory limits, and records v2 device program attaches."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, version: int):
        self.root = root
        self.version = version
        self.omit: set[str] = set()  # file names the "kernel" does not have
        self.subtree_writes: list[Path] = []
        self.writes: list[tuple[Path, str]] = []  # every write through the drivers' write_file
        self.attached: list[Path] = []  # v2 cgroups a device program was attached to
        real_mkdir, real_rmdir, self.real_write = os.mkdir, os.rmdir, v2.write_file

        def mkdir(path, mode=0o777, **kw):
            real_mkdir(path, mode, **kw)
            path = Path(path)
            if path != root and root in path.parents:
                self._populate(path)

        def rmdir(path, **kw):
            path = Path(path)
            if root in path.parents:
                if (path / "cgroup.procs").exists() and read(path / "cgroup.procs"):
                    raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
                for child in path.iterdir():
                    if child.is_file():
                        child.unlink()
            real_rmdir(path, **kw)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "rmdir", rmdir)
        monkeypatch.setattr(v2, "write_file", self.write_file)
        monkeypatch.setattr(v1, "write_file", self.write_file)
        monkeypatch.setattr(v2, "attach_device_filter", self.attached.append)

    def write_file(self, path, data):
        path = Path(path)
        text = data.decode() if isinstance(data, bytes) else data
        self.writes.append((path, text))
        if self.root not in path.parents:
            return self.real_write(path, data)
        handler = {"cgroup.subtree_control": self._write_subtree_control, "devices.deny": self._write_devices,
                   "devices.allow": self._write_devices, "memory.limit_in_bytes": self._write_memory_limit,
                   "memory.memsw.limit_in_bytes": self._write_memory_limit}.get(path.name)
        return handler(path, text) if handler else self.real_write(path, data)

    def _write_subtree_control(self, path: Path, text: str) -> None:
        self.subtree_writes.append(path)
        if path.parent != self.root and read(path.parent / "cgroup.procs"):
            # cgroup v2 has no controllers where a non-root cgroup holds processes
            raise OSError(errno.EBUSY, f"write {path}: {os.strerror(errno.EBUSY)}")
        enabled = set(read(path).split())
        for change in text.split():
            (enabled.add if change[0] == "+" else enabled.discard)(change[1:])
        write(path, " ".join(sorted(enabled)))
        for child in path.parent.iterdir():  # the kernel updates the children at once
            if child.is_dir():
                self._sync_v2_controllers(child)

    def _write_devices(self, path: Path, text: str) -> None:
        """One rule per write, as the kernel takes them; "a" resets the list."""
        listing = path.parent / "devices.list"
        if text == "a":
            if any(child.is_dir() for child in path.parent.iterdir()):
                raise OSError(errno.EINVAL, f"write {path}: {os.strerror(errno.EINVAL)}")  # as the kernel
            write(listing, "" if path.name == "devices.deny" else "a *:* rwm")
        elif path.name == "devices.allow" and read(listing) != "a *:* rwm":
            write(listing, "\n".join([*read(listing).splitlines(), text]))

    def _write_memory_limit(self, path: Path, text: str) -> None:
        """memory.memsw.limit_in_bytes may never be below memory.limit_in_bytes (EINVAL)."""
        value = UNLIMITED_V1 if text == "-1" else text
        limit, memsw = path.parent / "memory.limit_in_bytes", path.parent / "memory.memsw.limit_in_bytes"
        other = memsw if path == limit else limit
        if other.exists():
            low, high = (int(value), int(read(other))) if path == limit else (int(read(other)), int(value))
            if low > high:
                raise OSError(errno.EINVAL, f"write {path}: {os.strerror(errno.EINVAL)}")
        write(path, value)

    def _populate(self, path: Path) -> None:
        files = {"cgroup.procs": ""}
        if self.version == 1:
            hierarchy = next(p for p in path.parents if p.parent == self.root)
            for controller in hierarchy.name.split(","):
                files.update(V1_FILES.get(controller, {}))
        else:
            files.update(V2_FILES[""])
        for name, text in files.items():
            if name not in self.omit:
                write(path / name, text)
        if self.version == 2:
            self._sync_v2_controllers(path)

    def _sync_v2_controllers(self, path: Path) -> None:
        """A v2 cgroup has the controllers its parent enables, and their files."""
        enabled = read(path.parent / "cgroup.subtree_control").split()
        write(path / "cgroup.controllers", " ".join(enabled))
        for controller in enabled:
            for name, text in V2_FILES.get(controller, {}).items():
                if name not in self.omit and not (path / name).exists():
                    write(path / name, text)


def make_v1_tree(root: Path, names=V1_DEFAULT) -> Path:
    """Hierarchy roots as the kernel mounts them: each has a cgroup.procs."""
    for name in names:
        (root / name).mkdir(parents=True)
        write(root / name / "cgroup.procs", "1")
    return root


def make_v2_tree(root: Path, controllers: str = V2_ROOT_CONTROLLERS, enabled: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write(root / "cgroup.controllers", controllers)
    write(root / "cgroup.subtree_control", enabled)
    write(root / "cgroup.procs", "1")
    return root


class FakeDriver:
    """A driver on a fake tree plus where its files are, so one test covers both."""

    def __init__(self, version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.version = version
        root = tmp_path / "cgroup"
        make_v1_tree(root) if version == 1 else make_v2_tree(root)
        self.fs = FakeCgroupFs(root, monkeypatch, version)
        self.driver = detect(root, parent="lclusterd")

    def file(self, cgroup, controller: str, name: str) -> Path:
        return cgroup.dirs[controller] / name if self.version == 1 else cgroup.path / name

    def dirs(self, cgroup) -> list[Path]:
        return list(cgroup.dirs.values()) if self.version == 1 else [cgroup.path]


@pytest.fixture(params=[1, 2], ids=["cgroup-v1-fake", "cgroup-v2-fake"])
def fake(request, tmp_path, monkeypatch) -> FakeDriver:
    return FakeDriver(request.param, tmp_path, monkeypatch)


# ---- detect() ----


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() if p.is_file() else "/" for p in root.rglob("*")}


def test_detect_v2_fake(tmp_path, monkeypatch):
    root = make_v2_tree(tmp_path / "cgroup")
    fs = FakeCgroupFs(root, monkeypatch, 2)
    before = tree(root)
    driver = detect(root, parent="lclusterd")
    assert isinstance(driver, V2Driver) and driver.version == 2
    assert tree(root) == before and driver.job_names() == []  # detect() only reads

    driver.create("job1", Limits())  # the first create() makes the parent, controllers on
    assert read(root / "cgroup.subtree_control").split() == ["cpu", "memory", "pids"]
    assert read(root / "lclusterd" / "cgroup.subtree_control").split() == ["cpu", "memory", "pids"]
    assert fs.subtree_writes == [root / "cgroup.subtree_control", root / "lclusterd" / "cgroup.subtree_control"]
    assert driver.job_names() == ["job1"]


def test_detect_v1_fake(tmp_path, monkeypatch):
    root = make_v1_tree(tmp_path / "cgroup", ("blkio", "cpu", "cpuacct", "cpuset", "devices",
                                              "freezer", "memory", "pids", "systemd"))
    FakeCgroupFs(root, monkeypatch, 1)
    before = tree(root)
    driver = detect(root, parent="lclusterd")
    assert isinstance(driver, V1Driver) and driver.version == 1
    assert driver.hierarchies == {c: root / c for c in ("memory", "pids", "cpu", "cpuacct", "devices")}
    assert tree(root) == before and driver.job_names() == []  # detect() only reads

    driver.prepare()  # what the first create() does
    assert all((root / c / "lclusterd").is_dir() for c in driver.hierarchies)
    assert not (root / "blkio" / "lclusterd").exists()


def test_detect_hybrid_is_v1_fake(tmp_path, monkeypatch):
    root = make_v1_tree(tmp_path / "cgroup")
    make_v2_tree(root / "unified")  # the cgroup2 mount of a hybrid host carries no controllers we use
    FakeCgroupFs(root, monkeypatch, 1)
    driver = detect(root)
    assert driver.version == 1 and "unified" not in driver.hierarchies
    assert not (root / "unified" / "lclusterd").exists()


def test_detect_v1_combined_cpu_cpuacct_fake(tmp_path, monkeypatch):
    root = make_v1_tree(tmp_path / "cgroup", ("memory", "pids", "cpu,cpuacct", "freezer", "devices"))
    (root / "cpu").symlink_to("cpu,cpuacct")  # as systemd lays it out
    (root / "cpuacct").symlink_to("cpu,cpuacct")
    FakeCgroupFs(root, monkeypatch, 1)
    driver = detect(root)
    assert driver.hierarchies["cpu"] == driver.hierarchies["cpuacct"] == root / "cpu,cpuacct"

    job = driver.create("job1", Limits(cpus=1.5))
    assert driver.job_names() == ["job1"]
    assert len(job.unique_dirs) == 3 and len(job.procs_files) == 3  # memory, pids, cpu+cpuacct
    assert read(root / "cpu,cpuacct" / "lclusterd" / "job1" / "cpu.cfs_quota_us") == "150000"
    write(root / "cpu,cpuacct" / "lclusterd" / "job1" / "cpuacct.usage", "2000000000")
    assert job.stats().cpu_seconds == 2.0
    job.remove()
    assert driver.job_names() == [] and not (root / "cpu,cpuacct" / "lclusterd" / "job1").exists()


@pytest.mark.parametrize("missing", ["pids", "devices"])
@pytest.mark.parametrize("unmounted", [False, True], ids=["absent", "empty-dir"])
def test_detect_v1_missing_controller_fake(tmp_path, unmounted, missing):
    root = make_v1_tree(tmp_path / "cgroup", [c for c in V1_DEFAULT if c != missing])
    if unmounted:
        (root / missing).mkdir()  # a directory with no cgroup.procs is not a hierarchy
    with pytest.raises(SetupFailed) as err:
        detect(root)
    assert err.value.step == "cgroups" and f"cgroup v1 controller(s) {missing} not mounted" in str(err.value)


def test_detect_v1_devices_mounted_with_memory_is_refused_fake(tmp_path):
    # Job directories would sit below the devices parent (its deny-all fails with children).
    root = make_v1_tree(tmp_path / "cgroup", ("memory,devices", "pids", "cpu", "cpuacct"))
    (root / "memory").symlink_to("memory,devices")
    (root / "devices").symlink_to("memory,devices")
    with pytest.raises(SetupFailed, match=r"devices is mounted together with memory at .*/memory,devices"):
        detect(root)


def test_v1_driver_without_the_devices_hierarchy_is_refused_fake(tmp_path):
    with pytest.raises(ValueError, match="needs the devices hierarchy"):
        V1Driver({c: tmp_path / c for c in ("memory", "pids", "cpu", "cpuacct")})


def test_detect_v2_controller_unavailable_fake(tmp_path):
    root = make_v2_tree(tmp_path / "cgroup", controllers="cpu io pids")
    with pytest.raises(SetupFailed, match=r"controller\(s\) memory not in .*/cgroup.controllers"):
        detect(root)


def test_v2_fake_enable_error_names_the_file(tmp_path, monkeypatch):
    root = make_v2_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 2)
    (root / "outer").mkdir()
    write(root / "outer" / "cgroup.procs", "4242")  # "no internal processes": EBUSY
    driver = detect(root, parent="outer/lclusterd")
    with pytest.raises(OSError, match=r"write .*/outer/cgroup.subtree_control: Device or resource busy"):
        driver.create("job1", Limits())


def test_v2_fake_enables_only_missing_controllers(tmp_path, monkeypatch):
    # A shared root (systemd's) that already enables them is left alone.
    root = make_v2_tree(tmp_path / "cgroup", enabled="cpu io memory pids")
    fs = FakeCgroupFs(root, monkeypatch, 2)
    detect(root, parent="lclusterd").create("job1", Limits())
    detect(root, parent="lclusterd").create("job2", Limits())  # a restart: nothing left to enable
    assert fs.subtree_writes == [root / "lclusterd" / "cgroup.subtree_control"]


# ---- both drivers ----


def test_limits_written(fake):
    job = fake.driver.create("job1", Limits(memory_bytes=64 << 20, cpus=0.29, pids=16))
    if fake.version == 1:
        expected = {
            ("memory", "memory.limit_in_bytes"): "67108864",
            ("memory", "memory.memsw.limit_in_bytes"): "67108864",
            ("pids", "pids.max"): "16",
            ("cpu", "cpu.cfs_period_us"): "100000",
            ("cpu", "cpu.cfs_quota_us"): "29000",
        }
    else:
        expected = {
            ("memory", "memory.max"): "67108864",
            ("memory", "memory.swap.max"): "0",
            ("pids", "pids.max"): "16",
            ("cpu", "cpu.max"): "29000 100000",
        }
    assert {key: read(fake.file(job, *key)) for key in expected} == expected


def test_no_limits_keeps_kernel_defaults(fake):
    job = fake.driver.create("job1", Limits())
    files = V1_FILES if fake.version == 1 else V2_FILES
    # v1 joins the cpu hierarchy only for a CPU limit.
    for controller in ("memory", "pids") if fake.version == 1 else ("memory", "pids", "cpu"):
        for name, default in files[controller].items():
            assert read(fake.file(job, controller, name)) == default.strip()


def test_v1_fake_joins_cpu_hierarchy_only_with_a_cpu_limit(tmp_path, monkeypatch):
    root = make_v1_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 1)
    driver = detect(root)
    plain = driver.create("plain", Limits(memory_bytes=1 << 20))
    limited = driver.create("limited", Limits(cpus=0.5))
    assert sorted(plain.dirs) == ["cpuacct", "memory", "pids"]
    assert sorted(limited.dirs) == ["cpu", "cpuacct", "memory", "pids"]
    assert not (root / "cpu" / "lclusterd" / "plain").exists()
    assert not (root / "freezer" / "lclusterd" / "plain").exists()


def test_limits_without_swap_accounting(fake):
    fake.fs.omit = {"memory.memsw.limit_in_bytes", "memory.swap.max"}
    job = fake.driver.create("job1", Limits(memory_bytes=1 << 20))
    limit_file = "memory.limit_in_bytes" if fake.version == 1 else "memory.max"
    assert read(fake.file(job, "memory", limit_file)) == str(1 << 20)
    assert not fake.file(job, "memory", "memory.memsw.limit_in_bytes").exists()
    assert not fake.file(job, "memory", "memory.swap.max").exists()


def test_create_failure_names_file_and_cleans_up(fake):
    fake.fs.omit = {"pids.max"}  # as if the pids controller were not there
    with pytest.raises(FileNotFoundError, match=r"write .*/lclusterd/job1/pids\.max: No such file"):
        fake.driver.create("job1", Limits(pids=4))
    assert fake.driver.job_names() == []


def test_create_existing_fails(fake):
    fake.driver.create("job1", Limits())
    with pytest.raises(FileExistsError, match=r"mkdir .*/lclusterd/job1"):
        fake.driver.create("job1", Limits())


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_invalid_name_rejected(fake, name):
    with pytest.raises(ValueError, match="invalid cgroup name"):
        fake.driver.create(name, Limits())


def test_job_names_and_open(fake):
    assert fake.driver.job_names() == []
    for name in ("b", "a"):
        fake.driver.create(name, Limits())
    assert fake.driver.job_names() == ["a", "b"]
    opened = fake.driver.open("a")  # as after a restart: nothing is created
    assert opened.name == "a"
    assert opened.procs_files == [str(d / "cgroup.procs") for d in fake.dirs(opened)]
    opened.remove()
    assert fake.driver.job_names() == ["b"]


def test_nested_parent(fake, tmp_path):
    driver = type(fake.driver)(
        fake.driver.hierarchies if fake.version == 1 else fake.driver.root, parent="lclusterd/node1")
    job = driver.create("job1", Limits(pids=3))
    assert read(fake.file(job, "pids", "pids.max")) == "3"
    assert "/lclusterd/node1/job1" in job.procs_files[0]
    assert driver.job_names() == ["job1"] and fake.driver.job_names() == ["node1"]
    if fake.version == 2:  # every level enables the controllers for the next
        assert "pids" in read(driver.root / "lclusterd" / "node1" / "cgroup.subtree_control").split()


def test_join_self_writes_zero(fake):
    job = fake.driver.create("job1", Limits())
    job.join_self()
    for procs in job.procs_files:
        assert Path(procs).read_bytes() == b"0"  # the kernel reads "0" as "the writer"


def test_pids_and_is_empty(fake):
    job = fake.driver.create("job1", Limits())
    assert job.pids() == [] and job.is_empty()
    for procs in job.procs_files:
        write(Path(procs), "12\n7")
    assert sorted(job.pids()) == [7, 12] and not job.is_empty()
    assert fake.driver.open("gone").pids() == []  # a removed cgroup holds nothing


def test_signal_all_skips_exited_processes(fake):
    job = fake.driver.create("job1", Limits())
    no_such_pid = int(Path("/proc/sys/kernel/pid_max").read_text())  # pids stay below it
    with subprocess.Popen(["sleep", "30"]) as child:
        for procs in job.procs_files:
            write(Path(procs), f"{no_such_pid}\n{child.pid}")
        job.signal_all(signal.SIGTERM)
        assert child.wait(timeout=10) == -signal.SIGTERM


def test_kill_all_on_empty_cgroup_returns(fake):
    job = fake.driver.create("job1", Limits())
    job.kill_all()
    assert job.is_empty()


def test_remove_retries_while_busy(fake, monkeypatch):
    job = fake.driver.create("job1", Limits())
    busy = {"left": 2}
    fake_rmdir = os.rmdir

    def rmdir(path, **kw):
        if busy["left"]:  # the kernel still counts a task that is exiting
            busy["left"] -= 1
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        fake_rmdir(path, **kw)

    monkeypatch.setattr(os, "rmdir", rmdir)
    job.remove()
    assert fake.driver.job_names() == [] and not any(d.exists() for d in fake.dirs(job))
    job.remove()  # twice is fine: missing directories are ignored


def test_remove_gives_up_naming_the_directory_fake(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").touch()  # ENOTEMPTY: not EBUSY, so no retry
    with pytest.raises(OSError, match=f"rmdir {busy}: Directory not empty"):
        v1.remove_dir(busy, timeout=0.05)


# ---- stats ----


def test_v1_fake_stats_parsed(tmp_path, monkeypatch):
    root = make_v1_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 1)
    job = detect(root).create("job1", Limits())
    write(job.dirs["memory"] / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3")
    write(job.dirs["memory"] / "memory.max_usage_in_bytes", "33554432")
    write(job.dirs["cpuacct"] / "cpuacct.usage", "1500000000")
    assert job.stats() == CgroupStats(oom_kills=3, peak_memory_bytes=33554432, cpu_seconds=1.5)


def test_v1_fake_stats_old_kernel_without_oom_kill_line(tmp_path, monkeypatch):
    root = make_v1_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 1)
    job = detect(root).create("job1", Limits())
    write(job.dirs["memory"] / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0")
    assert job.stats().oom_kills == 0


def test_v2_fake_stats_parsed(tmp_path, monkeypatch):
    root = make_v2_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 2)
    job = detect(root).create("job1", Limits())
    write(job.path / "memory.events", "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 0")
    write(job.path / "memory.peak", "4096")
    write(job.path / "cpu.stat", "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000")
    assert job.stats() == CgroupStats(oom_kills=2, peak_memory_bytes=4096, cpu_seconds=2.5)


def test_v2_fake_stats_without_memory_peak(tmp_path, monkeypatch):
    root = make_v2_tree(tmp_path / "cgroup")
    fs = FakeCgroupFs(root, monkeypatch, 2)
    fs.omit = {"memory.peak"}  # kernels before 5.19
    job = detect(root).create("job1", Limits())
    assert job.stats() == CgroupStats(oom_kills=0, peak_memory_bytes=None, cpu_seconds=0.0)


def test_v2_fake_kill_all_writes_cgroup_kill(tmp_path, monkeypatch):
    root = make_v2_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 2)
    job = detect(root).create("job1", Limits())
    write(job.path / "cgroup.events", "populated 1\nfrozen 0")
    calls = []

    def wait_until(predicate, timeout):  # the kernel empties the cgroup after the write
        calls.append(read(job.path / "cgroup.kill"))
        write(job.path / "cgroup.events", "populated 0\nfrozen 0")
        return predicate()

    monkeypatch.setattr(v2, "wait_until", wait_until)
    job.kill_all()
    assert calls == ["1"]


def test_v1_fake_a_job_left_in_some_hierarchies_is_still_found_and_removed(tmp_path, monkeypatch):
    # A helper killed between two rmdirs leaves the job in pids and cpuacct only.
    root = make_v1_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 1)
    driver = detect(root)
    driver.create("half", Limits())
    os.rmdir(root / "memory" / "lclusterd" / "half")
    assert driver.job_names() == ["half"]
    driver.open("half").remove()
    assert driver.job_names() == []
    assert not any((root / c / "lclusterd" / "half").exists() for c in ("memory", "pids", "cpuacct"))


def test_v1_fake_remove_tries_every_hierarchy_before_failing(tmp_path, monkeypatch):
    root = make_v1_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 1)
    driver = detect(root)
    job = driver.create("stuck", Limits())
    write(root / "memory" / "lclusterd" / "stuck" / "cgroup.procs", "4242")  # a task the kernel still counts
    monkeypatch.setattr(v1, "REMOVE_TIMEOUT_S", 0.01)
    with pytest.raises(OSError, match="rmdir .*memory/lclusterd/stuck: Device or resource busy"):
        job.remove()
    assert [c for c in ("memory", "pids", "cpuacct") if (root / c / "lclusterd" / "stuck").exists()] == ["memory"]


# ---- devices: v1 rules on the parent, v2 program attached to the parent ----


def test_v1_fake_parent_denies_every_device_then_allows_the_jobs_own(tmp_path, monkeypatch):
    root = make_v1_tree(tmp_path / "cgroup")
    fs = FakeCgroupFs(root, monkeypatch, 1)
    driver = detect(root, parent="lclusterd/node1")
    job = driver.create("job1", Limits())  # prepares the parent first
    parent = root / "devices" / "lclusterd" / "node1"
    assert [(p.name, text) for p, text in fs.writes if p.parent == parent] == [
        ("devices.deny", "a"), *[("devices.allow", line) for line in ALLOWED_LINES]]
    assert read(parent / "devices.list").splitlines() == ALLOWED_LINES
    assert read(root / "devices" / "lclusterd" / "devices.list") == "a *:* rwm"  # the last component only
    # No job directory in the devices hierarchy: the job's init joins the parent instead.
    assert "devices" not in job.dirs and not (parent / "job1").exists()
    assert driver.device_procs_files() == [str(parent / "cgroup.procs")]
    assert not any("/devices/" in f for f in job.procs_files)


def test_v1_fake_a_process_enters_the_device_rules_and_leaves_them_for_the_root(tmp_path, monkeypatch):
    # The fork server enters once at start, so every job init it spawns is born under the rules.
    root = make_v1_tree(tmp_path / "cgroup")
    fs = FakeCgroupFs(root, monkeypatch, 1)
    driver = detect(root, parent="lclusterd/node1")
    driver.prepare()
    fs.writes.clear()
    driver.enter_device_rules()
    driver.leave_device_rules()
    assert fs.writes == [(root / "devices" / "lclusterd" / "node1" / "cgroup.procs", "0"),
                         (root / "devices" / "cgroup.procs", "0")]


def test_v1_fake_prepare_again_leaves_rules_in_place(tmp_path, monkeypatch):
    # A restart: rewriting would deny everything for a moment to jobs still running.
    root = make_v1_tree(tmp_path / "cgroup")
    fs = FakeCgroupFs(root, monkeypatch, 1)
    detect(root).prepare()
    fs.writes.clear()
    detect(root).prepare()
    assert [p for p, _ in fs.writes if p.name.startswith("devices.")] == []
    write(root / "devices" / "lclusterd" / "devices.list", "a *:* rwm")  # someone opened it up again
    detect(root).prepare()
    assert read(root / "devices" / "lclusterd" / "devices.list").splitlines() == ALLOWED_LINES


def test_v1_fake_job_names_open_and_sweep_ignore_the_devices_parent(tmp_path, monkeypatch):
    root = make_v1_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 1)
    driver = detect(root)
    for name in ("b", "a"):
        driver.create(name, Limits())
    write(root / "devices" / "lclusterd" / "cgroup.procs", "4242")  # jobs' processes live there
    assert driver.job_names() == ["a", "b"]
    opened = driver.open("a")
    assert sorted(opened.dirs) == ["cpu", "cpuacct", "memory", "pids"] and opened.pids() == []
    for name in driver.job_names():  # as the fork server's sweep
        driver.open(name).remove()
    assert driver.job_names() == []


def test_v1_fake_remove_parent_removes_the_devices_parent(tmp_path, monkeypatch):
    root = make_v1_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 1)
    driver = detect(root, parent="lclusterd/node1")
    driver.create("job1", Limits())
    procs = Path(driver.device_procs_files()[0])
    write(procs, "4242")  # a job's process still there: that parent stays, the rest goes
    driver.open("job1").remove()
    driver.remove_parent()
    assert [c for c in V1_DEFAULT if (root / c / "lclusterd").exists()] == ["devices"]
    write(procs, "")
    driver.remove_parent()
    assert not any((root / c / "lclusterd").exists() for c in V1_DEFAULT)


def test_v2_fake_device_program_goes_on_the_parent_once(tmp_path, monkeypatch):
    root = make_v2_tree(tmp_path / "cgroup")
    fs = FakeCgroupFs(root, monkeypatch, 2)
    driver = detect(root, parent="lclusterd/node1")
    driver.create("job1", Limits())
    driver.create("job2", Limits())
    assert fs.attached == [root / "lclusterd" / "node1"]  # not per job: they inherit it
    assert driver.device_procs_files() == []
    detect(root, parent="lclusterd/node1").prepare()  # a restart attaches again (it replaces)
    assert fs.attached == [root / "lclusterd" / "node1"] * 2


# ---- node ceilings on the parent ----


def test_node_limits_written_on_the_parents_last_component(fake):
    driver = type(fake.driver)(
        fake.driver.hierarchies if fake.version == 1 else fake.driver.root, parent="lclusterd/node1")
    driver.prepare(NodeLimits(memory_bytes=512 << 20, pids=300))
    if fake.version == 1:
        memory, pids = (driver.hierarchies[c] / "lclusterd" for c in ("memory", "pids"))
        expected = {memory / "node1" / "memory.limit_in_bytes": str(512 << 20),
                    memory / "node1" / "memory.memsw.limit_in_bytes": str(512 << 20),
                    pids / "node1" / "pids.max": "300",
                    memory / "memory.limit_in_bytes": UNLIMITED_V1, pids / "pids.max": "max"}
    else:
        parent = driver.root / "lclusterd"
        expected = {parent / "node1" / "memory.max": str(512 << 20), parent / "node1" / "memory.swap.max": "0",
                    parent / "node1" / "pids.max": "300", parent / "memory.max": "max", parent / "pids.max": "max"}
    assert {path: read(path) for path in expected} == expected


@pytest.mark.parametrize("sequence", [(64, 128, 32), (128, 32, None)], ids=["up-then-down", "down-then-unlimited"])
def test_v1_fake_node_memory_ceiling_moves_either_way_with_memsw(tmp_path, monkeypatch, sequence):
    # memsw may never be below the limit: the fake refuses, as the kernel does.
    root = make_v1_tree(tmp_path / "cgroup")
    FakeCgroupFs(root, monkeypatch, 1)
    memory = root / "memory" / "lclusterd"
    for mib in sequence:
        detect(root).prepare(NodeLimits(memory_bytes=None if mib is None else mib << 20))
        expected = UNLIMITED_V1 if mib is None else str(mib << 20)
        assert read(memory / "memory.limit_in_bytes") == read(memory / "memory.memsw.limit_in_bytes") == expected


def test_node_limits_without_swap_accounting(fake):
    fake.fs.omit = {"memory.memsw.limit_in_bytes", "memory.swap.max"}
    fake.driver.prepare(NodeLimits(memory_bytes=1 << 30))
    parent = fake.driver.hierarchies["memory"] / "lclusterd" if fake.version == 1 else fake.driver.parent_dir
    limit_file = "memory.limit_in_bytes" if fake.version == 1 else "memory.max"
    assert read(parent / limit_file) == str(1 << 30)
    assert not (parent / "memory.memsw.limit_in_bytes").exists() and not (parent / "memory.swap.max").exists()


def test_node_limits_none_writes_the_defaults_back(fake):
    fake.driver.prepare(NodeLimits(memory_bytes=1 << 30, pids=10))
    fake.driver.prepare(NodeLimits())
    if fake.version == 1:
        memory, pids = (fake.driver.hierarchies[c] / "lclusterd" for c in ("memory", "pids"))
        assert read(memory / "memory.limit_in_bytes") == read(memory / "memory.memsw.limit_in_bytes") == UNLIMITED_V1
    else:
        memory = pids = fake.driver.parent_dir
        assert read(memory / "memory.max") == read(memory / "memory.swap.max") == "max"
    assert read(pids / "pids.max") == "max"


def test_create_prepares_lazily_without_node_limits(fake):
    fake.driver.prepare(NodeLimits(pids=10))
    driver = detect(fake.fs.root)  # a second driver, as an old caller that never calls prepare()
    driver.create("job1", Limits())
    pids = driver.hierarchies["pids"] / "lclusterd" if fake.version == 1 else driver.parent_dir
    assert read(pids / "pids.max") == "10"  # prepare() without NodeLimits leaves them alone
    if fake.version == 1:
        assert read(driver.devices_dir / "devices.list").splitlines() == ALLOWED_LINES
    else:
        assert fake.fs.attached == [driver.parent_dir] * 2


# ---- the device list and the BPF program, as data ----

# From linux/bpf_common.h and linux/bpf.h, written out here rather than taken from
# device_filter, so a wrong opcode there cannot agree with itself.
BPF_LDX, BPF_ALU64, BPF_JMP = 0x01, 0x07, 0x05
BPF_W, BPF_MEM, BPF_K, BPF_X = 0x00, 0x60, 0x00, 0x08
BPF_AND, BPF_RSH, BPF_MOV, BPF_JNE, BPF_EXIT = 0x50, 0x70, 0xB0, 0x50, 0x90
DEVCG_TYPE = {"b": 1, "c": 2}
DEVCG_ACCESS = {"m": 1, "r": 2, "w": 4}
U64 = (1 << 64) - 1
CTX = object()  # r1 on entry: the pointer to struct bpf_cgroup_dev_ctx


def run_device_program(program: bytes, kind: str, major: int, minor: int, access: str) -> int:
    """What the kernel's BPF interpreter returns for one device access; only the
    instructions a device filter needs are known, anything else fails the test."""
    ctx = struct.pack("<III", sum(DEVCG_ACCESS[a] for a in access) << 16 | DEVCG_TYPE[kind], major, minor)
    insns = [struct.unpack_from("<BBhi", program, at) for at in range(0, len(program), 8)]
    regs: dict[int, object] = {1: CTX}  # a read of a register never written is a KeyError
    pc = 0
    while True:
        opcode, registers, off, imm = insns[pc]
        dst, src = registers & 0xF, registers >> 4
        pc += 1
        if opcode == BPF_LDX | BPF_MEM | BPF_W:
            assert regs[src] is CTX and 0 <= off <= len(ctx) - 4, "a load from outside the context"
            regs[dst] = struct.unpack_from("<I", ctx, off)[0]
        elif opcode == BPF_ALU64 | BPF_AND | BPF_K:
            regs[dst] = regs[dst] & (imm & U64)
        elif opcode == BPF_ALU64 | BPF_RSH | BPF_K:
            regs[dst] = regs[dst] >> imm
        elif opcode == BPF_ALU64 | BPF_MOV | BPF_K:
            regs[dst] = imm & U64
        elif opcode == BPF_ALU64 | BPF_MOV | BPF_X:
            regs[dst] = regs[src]
        elif opcode == BPF_JMP | BPF_JNE | BPF_K:
            pc += off if regs[dst] != imm & U64 else 0
        elif opcode == BPF_JMP | BPF_EXIT:
            return regs[0]
        else:
            pytest.fail(f"instruction {pc - 1}: opcode {opcode:#x} the filter should not need")


def test_device_program_has_forward_jumps_only_and_ends_in_exit():
    program = device_filter.build_program(devices.ALLOWED)
    assert len(program) % 8 == 0
    insns = [struct.unpack_from("<BBhi", program, at) for at in range(0, len(program), 8)]
    for pc, (opcode, _, off, _) in enumerate(insns):
        if opcode == BPF_JMP | BPF_JNE | BPF_K:
            assert 0 <= off and pc + 1 + off < len(insns)  # the verifier refuses loops and jumps out
    assert insns[-1][0] == BPF_JMP | BPF_EXIT


@pytest.mark.parametrize("kind, major, minor, access, allowed", [
    ("c", 1, 3, "rw", True),  # /dev/null
    ("c", 1, 9, "r", True),  # /dev/urandom
    ("c", 5, 2, "rw", True),  # ptmx
    ("c", 136, 0, "rw", True),  # /dev/pts/0
    ("c", 136, 4095, "m", True),
    ("c", 1, 11, "w", False),  # /dev/kmsg, the probe's write to the host's kernel log
    ("c", 1, 11, "m", False),
    ("b", 7, 0, "r", False),  # a loop device
    ("b", 1, 3, "r", False),  # a block device with /dev/null's numbers
    ("b", 8, 0, "rw", False),  # /dev/sda
    ("c", 1, 1, "r", False),  # /dev/mem
    ("c", 5, 1, "rw", False),  # /dev/console
    ("c", 4, 1, "rw", False),  # tty1
    ("c", 10, 200, "rw", False),  # /dev/net/tun
    ("c", 137, 0, "rw", False),
], ids=lambda v: str(v))
def test_device_program_decides_like_the_rules(kind, major, minor, access, allowed):
    program = device_filter.build_program(devices.ALLOWED)
    assert run_device_program(program, kind, major, minor, access) == int(allowed)
    assert any(rule.allows(kind, major, minor, access) for rule in devices.ALLOWED) == allowed


def test_device_program_agrees_with_the_rules_everywhere():
    program = device_filter.build_program(devices.ALLOWED)
    accesses = ["".join(c) for n in (1, 2, 3) for c in itertools.combinations("rwm", n)]
    for kind, major, minor, access in itertools.product(
            "bc", (0, 1, 4, 5, 7, 8, 10, 136, 137, 254, 2**32 - 1), (0, 1, 2, 3, 5, 7, 8, 9, 11, 200, 2**20), accesses):
        expected = any(rule.allows(kind, major, minor, access) for rule in devices.ALLOWED)
        assert run_device_program(program, kind, major, minor, access) == int(expected), (kind, major, minor, access)


def test_device_program_checks_access_for_a_rule_that_grants_less_than_rwm():
    rules = [devices.DeviceRule("c", 1, 3, "r"), devices.DeviceRule("b", None, None, "m")]
    program = device_filter.build_program(rules)
    assert [run_device_program(program, "c", 1, 3, a) for a in ("r", "w", "m", "rw")] == [1, 0, 0, 0]
    assert [run_device_program(program, "b", 8, 1, a) for a in ("m", "r")] == [1, 0]
    assert run_device_program(device_filter.build_program([]), "c", 1, 3, "r") == 0  # no rule: nothing


def test_device_rules_as_v1_lines_and_every_node_of_dev_is_allowed():
    assert [rule.v1_line() for rule in devices.ALLOWED] == ALLOWED_LINES
    assert [tuple(node) for node in mounts.DEVICES] == [
        ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    binds = [op.source for op in mounts.plan_before_pivot(mounts.Scratch("/s"), "/rootfs")
             if op.kind == "mount" and op.flags == mounts.k.MS_BIND and op.source.startswith("/dev/")]
    assert binds == [f"/dev/{name}" for name, _, _ in mounts.DEVICES]
    for _, major, minor in mounts.DEVICES:  # a job can use every node its /dev gets
        assert any(rule.allows("c", major, minor, "rwm") for rule in devices.ALLOWED)


@pytest.mark.parametrize("gone", [errno.ENOENT, errno.ENODEV])
def test_pids_of_a_cgroup_removed_mid_read_are_none(tmp_path, monkeypatch, gone):
    # cgroup2 answers ENODEV when the directory goes between open and read (seen in CI
    # with a fork bomb's cgroup); both mean the cgroup is empty, not a runtime failure.
    def vanished(path):
        raise OSError(gone, f"read {path}: gone")
    monkeypatch.setattr(v1, "read_file", vanished)
    assert v1.read_pids(tmp_path / "cgroup.procs") == []


def test_pids_read_error_other_than_gone_is_raised(tmp_path, monkeypatch):
    def denied(path):
        raise OSError(errno.EACCES, f"read {path}: denied")
    monkeypatch.setattr(v1, "read_file", denied)
    with pytest.raises(PermissionError):
        v1.read_pids(tmp_path / "cgroup.procs")
