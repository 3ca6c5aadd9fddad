"""Both cgroup drivers on FAKE file trees under tmp_path: no root, no kernel.

FakeCgroupFs plays the kernel's part for directories: mkdir in a hierarchy creates the
control files the kernel would (in v2 only those of controllers the parent enables),
rmdir removes them, and a write to cgroup.subtree_control applies "+memory"-style
changes. Each test's name says which driver and that it is fake ("-fake", "_fake").
The real drivers are tested in tests/integration/test_cgroups_real.py.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest

from lclusterd.errors import SetupFailed
from lclusterd.runtime.cgroups import CgroupStats, Limits, V1Driver, V2Driver, detect, v1, v2

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


def write(path: Path, text: str) -> None:
    path.write_text(text + "\n" if text else "")


def read(path: Path) -> str:
    return path.read_text().strip()


class FakeCgroupFs:
    """A directory tree that acts like cgroupfs for mkdir, rmdir and subtree_control."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, version: int):
        self.root = root
        self.version = version
        self.omit: set[str] = set()  # file names the "kernel" does not have
        self.subtree_writes: list[Path] = []
        real_mkdir, real_rmdir, real_write = os.mkdir, os.rmdir, v2.write_file

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

        def write_file(path, data):
            path = Path(path)
            if path.name != "cgroup.subtree_control" or root not in path.parents:
                return real_write(path, data)
            self.subtree_writes.append(path)
            if path.parent != root and read(path.parent / "cgroup.procs"):
                # cgroup v2 has no controllers where a non-root cgroup holds processes
                raise OSError(errno.EBUSY, f"write {path}: {os.strerror(errno.EBUSY)}")
            enabled = set(read(path).split())
            for change in (data.decode() if isinstance(data, bytes) else data).split():
                (enabled.add if change[0] == "+" else enabled.discard)(change[1:])
            write(path, " ".join(sorted(enabled)))
            for child in path.parent.iterdir():  # the kernel updates the children at once
                if child.is_dir():
                    self._sync_v2_controllers(child)

        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "rmdir", rmdir)
        monkeypatch.setattr(v2, "write_file", write_file)

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


def make_v1_tree(root: Path, names=("memory", "pids", "cpu", "cpuacct", "freezer")) -> Path:
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
    assert driver.hierarchies == {c: root / c for c in ("memory", "pids", "cpu", "cpuacct")}
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
    root = make_v1_tree(tmp_path / "cgroup", ("memory", "pids", "cpu,cpuacct", "freezer"))
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


@pytest.mark.parametrize("unmounted", [False, True], ids=["absent", "empty-dir"])
def test_detect_v1_missing_controller_fake(tmp_path, unmounted):
    root = make_v1_tree(tmp_path / "cgroup", ("memory", "cpu", "cpuacct", "freezer"))
    if unmounted:
        (root / "pids").mkdir()  # a directory with no cgroup.procs is not a hierarchy
    with pytest.raises(SetupFailed, match="pids") as err:
        detect(root)
    assert err.value.step == "cgroups" and "cgroup v1 controller(s) pids not mounted" in str(err.value)


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
