"""cgroup v1 driver: one directory per controller hierarchy for each job.

A job `name` gets `<hierarchy>/<parent>/<name>` in the memory, pids and cpuacct
hierarchies, and in cpu only when it has a CPU limit; controllers mounted together
(`cpu,cpuacct`) share one directory. Every hierarchy a job joins costs a mkdir, a
write to cgroup.procs (which can wait for the kernel's teardown of the previous job's
cgroups) and an rmdir on each job's start path, so none is joined without a use.
That is why jobs have no directory in the devices hierarchy: the device rules are the
same for every job, so they go once on `<devices>/<parent>` (deny all, then allow
devices.ALLOWED) and a job's init joins that parent instead (device_procs_files).
No freezer: all of a job's processes share one PID namespace whose init is in the
cgroup, and SIGKILL to that init makes the kernel kill the whole namespace at once,
so a kill cannot be outrun by forks (see V1Cgroup.kill_all).
The small file helpers at the top are shared with the v2 driver.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from lclusterd.runtime.devices import ALLOWED

from .base import CgroupStats, Limits, NodeLimits

CFS_PERIOD_US = 100_000
# memory: limit, peak and OOM kills; pids: the limit; cpuacct: CPU time.
ALWAYS_JOINED = ("memory", "pids", "cpuacct")
DEVICES = "devices"  # the hierarchy with no job directories, only the parent
KILL_TIMEOUT_S = 5.0
REMOVE_TIMEOUT_S = 2.0


def write_file(path: str | Path, data: str | bytes) -> None:
    """Write one value to a kernel file with a single write(); the error names the file.
    Does no imports and little allocation, so it is safe in a forked child."""
    if isinstance(data, str):
        data = data.encode()
    try:
        # O_TRUNC as a shell's `>` does: cgroupfs ignores it, a plain file (tests) needs it.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as e:
        raise OSError(e.errno, f"write {path}: {e.strerror}") from e


def read_file(path: str | Path) -> str:
    """Read a small kernel file with plain open/read/close (Python's buffered open
    adds four more syscalls per file, on every job's clean-up path)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as e:
        raise OSError(e.errno, f"read {path}: {e.strerror}") from e
    return b"".join(chunks).decode()


def read_optional(path: Path) -> str | None:
    """The file's text, or None where this kernel does not have the file."""
    try:
        return read_file(path)
    except FileNotFoundError:
        return None


def read_key(text: str | None, key: str) -> int | None:
    """The value of a `key N` line (memory.oom_control, memory.events, cpu.stat)."""
    for line in (text or "").splitlines():
        k, _, value = line.partition(" ")
        if k == key:
            return int(value)
    return None


def make_dirs(path: Path) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno, f"mkdir -p {path}: {e.strerror}") from e


def make_dir(path: Path) -> None:
    try:
        os.mkdir(path)
    except OSError as e:
        raise OSError(e.errno, f"mkdir {path}: {e.strerror}") from e


def read_pids(procs_file: Path) -> list[int]:
    try:
        return [int(pid) for pid in read_file(procs_file).split()]
    except FileNotFoundError:  # the cgroup is already gone, so nothing is in it
        return []
    except OSError as e:
        # Removed between open and read: cgroup2 answers ENODEV, which means the same.
        if e.errno == errno.ENODEV:
            return []
        raise


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # exited since cgroup.procs was read
            pass


def remove_dir(path: Path, timeout: float | None = None) -> None:
    """rmdir, retrying on EBUSY for `timeout` (default REMOVE_TIMEOUT_S): the kernel keeps a
    cgroup busy for a moment after its last task has exited. A missing directory is fine."""
    deadline = time.monotonic() + (REMOVE_TIMEOUT_S if timeout is None else timeout)
    delay = 0.001
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise OSError(e.errno, f"rmdir {path}: {e.strerror}") from e
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def remove_empty_ancestors(base: Path, parent: str) -> None:
    """rmdir base/parent, then each of its ancestors up to base, stopping at the first
    that is not empty or not there."""
    parts = Path(parent).parts
    for depth in range(len(parts), 0, -1):
        try:
            os.rmdir(base.joinpath(*parts[:depth]))
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EBUSY, errno.EEXIST):
                return
            raise OSError(e.errno, f"rmdir {base.joinpath(*parts[:depth])}: {e.strerror}") from e


def kill_until_empty(
    list_pids: Callable[[], list[int]],
    freeze: Callable[[], None] = lambda: None,
    thaw: Callable[[], None] = lambda: None,
    timeout: float = KILL_TIMEOUT_S,
) -> None:
    """SIGKILL every listed process (between freeze and thaw, where the caller has a
    freezer); repeat until the list is empty or `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while list_pids() and time.monotonic() < deadline:
        freeze()
        try:
            signal_pids(list_pids(), signal.SIGKILL)
        finally:
            thaw()  # a frozen task only acts on SIGKILL once it runs again
        time.sleep(0.005)


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.002)
    return True


def check_name(name: str) -> None:
    # The name becomes one path component; anything else could escape the parent.
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid cgroup name {name!r}")


class V1Cgroup:
    """One job's directories, one per hierarchy (`dirs` maps controller -> directory)."""

    def __init__(self, name: str, dirs: dict[str, Path]):
        self.name = name
        self.dirs = dirs
        self.unique_dirs = list(dict.fromkeys(dirs.values()))
        # Built once: the job init writes "0" into each (plan.job_plan), as does join_self.
        self._procs_files = [str(d / "cgroup.procs") for d in self.unique_dirs]

    @property
    def procs_files(self) -> list[str]:
        return list(self._procs_files)

    def join_self(self) -> None:
        for path in self._procs_files:
            write_file(path, b"0")

    def pids(self) -> list[int]:
        # The union: a process that joined only some hierarchies still belongs to the job.
        return sorted({pid for d in self.unique_dirs for pid in read_pids(d / "cgroup.procs")})

    def is_empty(self) -> bool:
        return not self.pids()

    def signal_all(self, sig: int) -> None:
        signal_pids(self.pids(), sig)

    def kill_all(self) -> None:
        """SIGKILL every listed process, again until none is left. A job's PID namespace
        init is always listed, and its death takes the whole namespace with it, so
        forks cannot outrun this; for processes outside a PID namespace it still
        converges, as each round kills the parents that could fork."""
        kill_until_empty(self.pids)

    def stats(self) -> CgroupStats:
        memory = self.dirs["memory"]
        # The `oom_kill` line exists since Linux 4.13; older kernels do not count kills.
        oom_kills = read_key(read_optional(memory / "memory.oom_control"), "oom_kill")
        peak = read_optional(memory / "memory.max_usage_in_bytes")
        usage_ns = read_optional(self.dirs["cpuacct"] / "cpuacct.usage")
        return CgroupStats(
            oom_kills=oom_kills or 0,
            peak_memory_bytes=int(peak) if peak is not None else None,
            cpu_seconds=int(usage_ns) / 1e9 if usage_ns is not None else None,
        )

    def remove(self) -> None:
        """rmdir the job's directory in every hierarchy, each tried even when an earlier one
        fails (then the first error is raised): a directory left in one hierarchy must not
        leave the others behind too."""
        first: OSError | None = None
        for d in self.unique_dirs:
            try:
                remove_dir(d)
            except OSError as error:
                first = first or error
        if first is not None:
            raise first


class V1Driver:
    """Job cgroups under `<hierarchy>/<parent>` of each v1 hierarchy but devices (see the
    module's doc). Making a driver touches nothing, so it doubles as a query (job_names);
    the first create() prepares the parent, or call prepare() at start-up to fail early
    and to set the node's ceilings."""

    version = 1

    def __init__(self, hierarchies: dict[str, Path], parent: str = "lclusterd"):
        if DEVICES not in hierarchies:
            raise ValueError("the cgroup v1 driver needs the devices hierarchy")
        self.hierarchies = {c: Path(p) for c, p in hierarchies.items()}
        self.job_hierarchies = {c: p for c, p in self.hierarchies.items() if c != DEVICES}
        self.parent = parent
        self.devices_dir = self.hierarchies[DEVICES] / parent
        self.prepared = False

    def prepare(self, node: NodeLimits | None = None) -> None:
        for d in dict.fromkeys(h / self.parent for h in self.hierarchies.values()):
            make_dirs(d)
        write_device_rules(self.devices_dir)
        if node is not None:
            write_memory_ceiling(self.hierarchies["memory"] / self.parent, node.memory_bytes)
            write_file(self.hierarchies["pids"] / self.parent / "pids.max",
                       "max" if node.pids is None else str(node.pids))
        self.prepared = True

    def device_procs_files(self) -> list[str]:
        return [str(self.devices_dir / "cgroup.procs")]

    def enter_device_rules(self) -> None:
        write_file(self.devices_dir / "cgroup.procs", b"0")

    def leave_device_rules(self) -> None:
        write_file(self.hierarchies[DEVICES] / "cgroup.procs", b"0")

    def open(self, name: str) -> V1Cgroup:
        check_name(name)
        return V1Cgroup(name, {c: h / self.parent / name for c, h in self.job_hierarchies.items()})

    def create(self, name: str, limits: Limits) -> V1Cgroup:
        check_name(name)
        used = ALWAYS_JOINED + (("cpu",) if limits.cpus is not None else ())
        cgroup = V1Cgroup(name, {c: self.hierarchies[c] / self.parent / name for c in used})
        if not self.prepared:
            self.prepare()
        made: list[Path] = []
        try:
            for d in cgroup.unique_dirs:
                make_dir(d)
                made.append(d)
            write_limits(cgroup, limits)
        except BaseException as err:
            for d in reversed(made):
                try:
                    remove_dir(d)
                except OSError as cleanup:
                    err.add_note(f"cleanup also failed: {cleanup}")
            raise
        return cgroup

    def remove_parent(self) -> None:
        """rmdir the parent in every hierarchy, devices included; the devices parent stays
        while a job's process is still in it (EBUSY), like any other."""
        for hierarchy in dict.fromkeys(self.hierarchies.values()):
            remove_empty_ancestors(hierarchy, self.parent)
        self.prepared = False

    def job_names(self) -> list[str]:
        """Every job with a directory in any hierarchy: a removal cut short (the helper killed
        between two rmdirs) can leave a job in some hierarchies only, and the sweep must
        still find it."""
        names: set[str] = set()
        for hierarchy in dict.fromkeys(self.job_hierarchies.values()):
            try:
                names.update(e.name for e in os.scandir(hierarchy / self.parent) if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                continue
        return sorted(names)


def write_device_rules(directory: Path) -> None:
    """Deny every device, then allow devices.ALLOWED, on the cgroup every job's processes
    join in the devices hierarchy. Skipped when devices.list already shows exactly those
    rules (a restart): rewriting would deny all for a moment to processes still in it.
    The kernel refuses the deny-all while the cgroup has children, and it has none."""
    wanted = {rule.v1_line() for rule in ALLOWED}
    if set(read_file(directory / "devices.list").splitlines()) == wanted:
        return
    write_file(directory / "devices.deny", "a")
    for rule in ALLOWED:
        write_file(directory / "devices.allow", rule.v1_line())


def write_memory_ceiling(memory: Path, limit: int | None) -> None:
    """memory.limit_in_bytes and, where the kernel accounts swap, memory.memsw.limit_in_bytes
    to `limit` (None: unlimited) on a cgroup that may have a limit already. memsw may never
    be below limit_in_bytes, so memsw goes first when the limit rises, second when it falls."""
    value = "-1" if limit is None else str(limit)
    limit_file = memory / "memory.limit_in_bytes"
    memsw = memory / "memory.memsw.limit_in_bytes"
    if not memsw.exists():
        write_file(limit_file, value)
        return
    rises = limit is None or limit >= int(read_file(limit_file))
    for path in (memsw, limit_file) if rises else (limit_file, memsw):
        write_file(path, value)


def write_limits(cgroup: V1Cgroup, limits: Limits) -> None:
    """Write the limits that are set; unset ones keep the kernel's default (unlimited)."""
    if limits.memory_bytes is not None:
        memory = cgroup.dirs["memory"]
        write_file(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
        # memory+swap gets the same value, so swap cannot be used to go past the limit.
        # (Order matters: memsw may never be below limit_in_bytes.) Absent without swap
        # accounting.
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            write_file(memsw, str(limits.memory_bytes))
    if limits.pids is not None:
        write_file(cgroup.dirs["pids"] / "pids.max", str(limits.pids))
    if limits.cpus is not None:
        cpu = cgroup.dirs["cpu"]
        write_file(cpu / "cpu.cfs_period_us", str(CFS_PERIOD_US))
        # round, not int: 0.29 * 100000 is 28999.999...
        write_file(cpu / "cpu.cfs_quota_us", str(round(limits.cpus * CFS_PERIOD_US)))
