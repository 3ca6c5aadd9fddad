"""The job's first process: one function per set-up step, in order.

Runs only in processes forked by the fork server, which has imported everything used
here, so the children do no imports. The fork server forks each one straight into a
new PID namespace (it unshares CLONE_NEWPID for its next child only), so this process
is PID 1 of its namespace and the fork server's own child.

It is forked *before* its job exists, as a spare: the steps that do not depend on the
job (namespaces, mount propagation, loopback) are done while it waits, off the start
path of the job it will become. Sequence (DESIGN.md "Starting a container"):

  spare:  close inherited fds -> new session -> unshare mount, UTS, IPC, network -> / private ->
          scratch tmpfs (the overlay's upper and work) -> loopback up ->
          drop the bounding set -> wait for the job on the socket
  job:    join the job cgroup -> unshare the cgroup namespace -> stdio -> mounts ->
          pivot_root -> masks -> hostname -> no_new_privs -> capabilities ->
          find the command -> close fds -> chdir -> exec

Status protocol on the spare's socket (close-on-exec, read to EOF by the fork
server): one line b"E<json>\n" with {"step", "errno", "detail"} when a step failed;
EOF with nothing written means exec succeeded and the command is running.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

from lclusterd.runtime import caps, cgroups, channel, kernel, mounts

# Made while waiting as a spare. The PID namespace is made by the fork server, and the
# cgroup namespace only after the job's cgroup is joined, so that it is its root.
SPARE_NAMESPACES = kernel.CLONE_NEWNS | kernel.CLONE_NEWUTS | kernel.CLONE_NEWIPC | kernel.CLONE_NEWNET
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


@dataclass
class PreparedJob:
    """What a spare needs to become the job, sent by the fork server as JSON (the
    job's stdin, stdout and stderr travel with it as file descriptors)."""

    job_id: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    hostname: str
    rootfs: str
    cgroup_procs: list[str]  # cgroup.procs files to write "0" into
    keep_caps: int  # the spare dropped the rest from its bounding set already

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class StepFailed(Exception):
    def __init__(self, step: str, error: BaseException):
        super().__init__(step)
        self.step = step
        self.errno = getattr(error, "errno", 0) or 0
        self.detail = describe(error)


class _Step:
    """`with _Step("pivot_root"):` names the step any exception inside it came from."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        if exc is not None and not isinstance(exc, StepFailed):
            raise StepFailed(self.name, exc) from exc
        return False


def run_spare(sock: socket.socket, mount_point: str, keep_caps: int, cap_last: int) -> NoReturn:
    """A spare job PID 1: prepare what needs no job, wait for one, become it. Never
    returns. A failure while preparing is reported as the job's failure once a job
    arrives, so the fork server has one place to hear about it.

    The job's writable layer lives on a tmpfs mounted on mount_point in this process's
    own mount namespace: no disk I/O on the start path, nothing on the host to clean
    up, and what the job writes is charged to its memory cgroup."""
    status_fd = sock.fileno()
    early: StepFailed | None = None
    try:
        kernel.set_process_name("lclusterd:spare")  # until exec names it after the job
        # Die with the fork server while no job is ours (cleared once one is).
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)
        # Hold none of the fork server's descriptors (other jobs' files, its sockets).
        kernel.close_range(3, status_fd - 1)
        kernel.close_range(status_fd + 1, 0xFFFFFFFF)
        # A session of its own: a Ctrl-C or SIGHUP meant for the daemon's terminal or
        # process group must not reach the job, whose end is the runtime's to decide.
        os.setsid()
        # The fork server's handlers and wakeup fd are not ours; the job gets defaults.
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        with _Step("unshare namespaces"):
            kernel.unshare(SPARE_NAMESPACES)
        with _Step("mount propagation"):
            kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)
        with _Step("scratch tmpfs"):
            kernel.mount("scratch", mount_point, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, "mode=755")
            for sub in ("upper", "work", "root"):
                os.mkdir(f"{mount_point}/{sub}", 0o755)
        with _Step("loopback up"):
            bring_loopback_up()
        with _Step("capability bounding set"):
            caps.drop_bounding(keep_caps, cap_last)
    except StepFailed as failure:
        early = failure
    except BaseException as error:  # noqa: BLE001
        early = StepFailed("spare", error)
    try:
        message, fds = channel.receive_with_fds(sock)
    except BaseException:  # noqa: BLE001 - the fork server closed us: no job is coming
        os._exit(0)
    if early is not None:
        _report(status_fd, early)
        os._exit(127)
    run_job(PreparedJob(**message), fds, status_fd, mount_point)


def run_job(job: PreparedJob, stdio: list[int], status_fd: int, scratch: str) -> NoReturn:
    """Turn this spare into the job. Never returns: execs the command or exits."""
    try:
        with _Step("start"):
            kernel.prctl(kernel.PR_SET_PDEATHSIG, 0)  # the job may outlive the fork server
            if len(stdio) != 3:
                raise OSError(0, f"expected 3 stdio descriptors, got {len(stdio)}")
        # Join first, so every later process of the job is born inside its cgroup.
        with _Step("join cgroup"):
            cgroups.join(job.cgroup_procs)
        # NEWCGROUP after the join makes the job's cgroup the root of its view.
        with _Step("unshare cgroup namespace"):
            kernel.unshare(kernel.CLONE_NEWCGROUP)
        with _Step("stdio"):
            for target, fd in enumerate(stdio):
                os.dup2(fd, target)
        os.umask(0)  # device nodes and mount points get exactly the modes planned
        root = f"{scratch}/root"
        with _Step("mount rootfs"):
            mounts.apply(mounts.plan_before_pivot(root, job.rootfs, f"{scratch}/upper", f"{scratch}/work"))
        with _Step("pivot_root"):
            mounts.pivot_into(root)
        with _Step("mask /proc"):
            mounts.apply(mounts.plan_after_pivot())
        os.umask(0o022)
        with _Step("hostname"):
            kernel.sethostname(job.hostname)
        with _Step("no_new_privs"):
            kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
        with _Step("capabilities"):
            caps.set_sets(job.keep_caps)
        with _Step("find command"):
            path = find_command(job.argv[0], job.env.get("PATH", ""))
        with _Step("close fds"):
            kernel.close_range_cloexec(3)
        with _Step("chdir"):
            try:
                os.chdir(job.cwd)
            except FileNotFoundError:
                raise FileNotFoundError(2, f"working directory {job.cwd} does not exist in the rootfs") from None
        with _Step("exec"):
            os.execve(path, job.argv, job.env)
    except StepFailed as failure:
        _report(status_fd, failure)
    except BaseException as error:  # noqa: BLE001
        _report(status_fd, StepFailed("init", error))
    os._exit(127)


def bring_loopback_up() -> None:
    """Set IFF_UP on lo in the job's new network namespace. Two ioctls on a throwaway
    socket: measured 0.3 ms against 6 ms for a pyroute2 IPRoute round trip here, and
    every job pays it (in its spare, but on the machine's CPU all the same)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0))
        flags = struct.unpack("16sh", request[:18])[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | _IFF_UP))


def find_command(name: str, search_path: str) -> str:
    """Resolve argv[0] inside the new root, so a missing binary is a set-up failure
    with a clear reason rather than an exit code 127 that looks like the job ran."""
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name) for d in search_path.split(":")]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(2, f"command not found in the rootfs: {name}")


def describe(error: BaseException) -> str:
    """A one-line reason: OSErrors without the "[Errno N]" prefix, with the file named."""
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return str(error) or type(error).__name__


def _report(status_fd: int, failure: StepFailed) -> None:
    message = json.dumps({"step": failure.step, "errno": failure.errno, "detail": failure.detail})
    try:
        os.write(status_fd, b"E" + message.encode() + b"\n")
    except OSError:
        pass  # the fork server is gone; nobody is left to tell
