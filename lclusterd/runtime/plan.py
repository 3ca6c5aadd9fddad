"""The job's first process as data: the ops `lclusterd-jobinit` (jobinit/jobinit.c)
executes, in order. Pure: no syscalls here; the order the container's security rests on
is decided, and unit-tested, in this file.

The fork server spawns the init as a *spare* before its job exists, with the spare's plan
as its argv: the steps that need no job (namespaces, mount propagation, the scratch tmpfs,
loopback, the bounding set) run off the start path of the job it will become. The job's
plan arrives on the init's socket when a job is handed over (docs/container.md):

  spare:  name -> die with the fork server -> close inherited fds -> new session ->
          unshare mount, UTS, IPC, network ->
          / private -> scratch tmpfs (the overlay's upper and work, /tmp) -> [make the
          job's user namespace, with the network namespace inside it] -> loopback up ->
          [drop the bounding set] -> wait for the job
  job:    join the job cgroup -> unshare the cgroup namespace -> stdio -> size the
          scratch tmpfs [and give it to the job's root] -> [idmapped rootfs] -> mounts ->
          pivot_root -> masks -> hostname -> [enter the user namespace -> drop the
          bounding set] -> {the job's user: groups, gid, uid} -> no_new_privs ->
          capabilities -> seccomp -> find the command -> close fds -> chdir -> exec
  ([...]: with a user namespace; without one the spare drops the bounding set. {...}: with
  a User.)

Everything that needs root on the host (mounts, pivot_root, hostname) happens before the
job enters its user namespace, in mount, UTS and IPC namespaces the host's root owns; the
job then is root only inside its user namespace. Its network namespace is made inside that
user namespace, so its root keeps NET_RAW and NET_BIND_SERVICE over its own network.

A plan is a flat list of string tokens: an op name, then its arguments (ARITY). "" stands
for NULL in a mount's source, type and data. "step NAME" names the steps after it in a
failure report ({"step", "errno", "detail"} on the status socket).
"""

from __future__ import annotations

import errno
import functools
import platform
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lclusterd.runtime import kernel, mounts
from lclusterd.runtime.mounts import Scratch
from lclusterd.runtime.users import Credentials
from lclusterd.runtime.userns import IdMap

JOBINIT = Path(__file__).resolve().parent / "jobinit" / "lclusterd-jobinit"

# Made while waiting as a spare. The PID namespace is made by the fork server (the init is
# spawned into it), and the cgroup namespace only after the job's cgroup is joined, so
# that it is its root.
SPARE_NAMESPACES = kernel.CLONE_NEWNS | kernel.CLONE_NEWUTS | kernel.CLONE_NEWIPC | kernel.CLONE_NEWNET
SIGKILL = 9

# Every op jobinit.c knows and how many arguments it takes (-1: all the rest). A unit test
# holds this table and the C one to the same list.
ARITY = {
    "userns": 3, "idmap": 2, "setuser": 0, "chown": 3,
    "step": 1, "name": 1, "pdeathsig": 1, "closefds": 0, "setsid": 0, "unshare": 1,
    "mount": 5, "mkdir": 2, "file": 1, "symlink": 2, "mask": 1, "readonly": 1,
    "loopback": 0, "bounding": 2, "capset": 1, "cgroup": 1, "stdio": 0, "umask": 1,
    "pivot": 1, "hostname": 1, "nnp": 0, "seccomp": 1, "wait": 0, "exec": -1, "network": 0,
    "mkdirs": 4, "volume": 3, "ids": 3, "pidfd": 1, "setns": 1, "nodump": 0, "forkwait": 0, "now": 0,
}


@dataclass(frozen=True)
class SeccompRule:
    """Calls to `syscalls` fail with `errno` instead of running: always, or only when the
    low 32 bits of their first argument have any bit of `arg0_any_bit`, or are none of
    `arg0_allowed` (jobinit/seccomp.c compiles the rules; a syscall is in one rule at most)."""

    syscalls: tuple[str, ...]
    errno: int
    arg0_any_bit: int = 0
    arg0_allowed: tuple[int, ...] = ()

    def token(self) -> str:
        """The rule as seccomp.c reads it: `ERRNO NAMES`, then ` &MASK` or ` !V,V...` (hex)."""
        if not 0 < self.errno <= 4095 or not self.syscalls or (self.arg0_any_bit and self.arg0_allowed):
            raise ValueError(f"malformed seccomp rule {self}")
        if any(not name.isidentifier() for name in self.syscalls):
            raise ValueError(f"malformed syscall name in {self.syscalls}")
        if any(not 0 <= value <= 0xFFFFFFFF for value in (self.arg0_any_bit, *self.arg0_allowed)):
            raise ValueError(f"seccomp rule values are 32-bit: {self}")
        if self.arg0_any_bit:
            condition = f" &{self.arg0_any_bit:x}"
        elif self.arg0_allowed:
            condition = " !" + ",".join(f"{value:x}" for value in self.arg0_allowed)
        else:
            condition = ""
        return f"{self.errno} {','.join(self.syscalls)}{condition}"


def seccomp_token(rules: tuple[SeccompRule, ...]) -> str:
    """The seccomp op's one argument: the rules joined by ';'."""
    return ";".join(rule.token() for rule in rules)


# The seccomp filter, installed after the capability drop: defence in depth, as Docker's and
# podman's default profiles (README "The seccomp filter" compares them). Most of these
# calls fail anyway without the dropped capabilities; the filter keeps them failing should
# a capability or a kernel check ever let one through.
SECCOMP_EPERM = (
    # kernel modules, kexec, reboot, swap, process accounting
    "delete_module", "finit_module", "init_module", "kexec_file_load", "kexec_load", "reboot",
    "swapoff", "swapon", "acct",
    # mounts and namespaces: the job's set-up is done, and a job makes no namespace of its own
    "fsconfig", "fsmount", "fsopen", "fspick", "mount", "mount_setattr", "move_mount", "open_tree",
    "open_tree_attr", "pivot_root", "umount2", "setns", "unshare",
    # host-wide state no namespace covers: keyrings, clocks, quotas, the kernel log
    "add_key", "keyctl", "request_key", "clock_adjtime", "clock_settime", "settimeofday",
    "quotactl", "quotactl_fd", "syslog",
    # what the runtime sets for the job: its host name, NUMA placement and LSM labels (Docker
    # allows these only with CAP_SYS_ADMIN or CAP_SYS_NICE)
    "sethostname", "setdomainname", "get_mempolicy", "mbind", "migrate_pages", "move_pages",
    "set_mempolicy", "set_mempolicy_home_node", "lsm_get_self_attr", "lsm_list_modules",
    "lsm_set_self_attr",
    # tracing and reaching into other processes, beyond ptrace of the job's own (which stays)
    "bpf", "perf_event_open", "lookup_dcookie", "fanotify_init", "kcmp", "pidfd_getfd",
    "process_madvise",
    # file handles skip the path walk, and with it the job's root
    "name_to_handle_at", "open_by_handle_at",
    # userfaultfd lets an exploit stall the kernel mid-copy at will; vmsplice has a history
    # of page-reference bugs; cachestat probes the page cache; vhangup needs CAP_SYS_TTY_CONFIG;
    # podman refuses io_pgetevents and map_shadow_stack until someone shows a need
    "userfaultfd", "vmsplice", "cachestat", "vhangup", "io_pgetevents", "map_shadow_stack",
) + (  # x86_64 only: port I/O and calls of old kernels
    ("ioperm", "iopl", "create_module", "get_kernel_syms", "query_module", "sysfs", "_sysctl", "uselib", "ustat")
    if platform.machine() == "x86_64" else ())

# clone() flags that make a namespace (clone3() takes its flags in memory a filter cannot read).
NAMESPACE_FLAGS = (kernel.CLONE_NEWNS | kernel.CLONE_NEWCGROUP | kernel.CLONE_NEWUTS | kernel.CLONE_NEWIPC
                   | kernel.CLONE_NEWUSER | kernel.CLONE_NEWPID | kernel.CLONE_NEWNET)

SECCOMP_RULES = (
    SeccompRule(SECCOMP_EPERM, errno.EPERM),
    # io_uring does I/O the filter never sees, and is a frequent source of kernel exploits;
    # ENOSYS is what a kernel built without it answers, which every user of it handles
    SeccompRule(("io_uring_setup", "io_uring_enter", "io_uring_register"), errno.ENOSYS),
    # no new namespaces, user namespaces included: clone3() answers ENOSYS so libc falls
    # back to clone(), whose flags the filter can read
    SeccompRule(("clone3",), errno.ENOSYS),
    SeccompRule(("clone",), errno.EPERM, arg0_any_bit=NAMESPACE_FLAGS),
    # the families a job has a use for; the rest (AF_VSOCK reaches the host past every
    # namespace, AF_ALG is kernel crypto, ...) answer as if not built in, so programs fall back
    SeccompRule(("socket", "socketpair"), errno.EAFNOSUPPORT, arg0_allowed=tuple(int(family) for family in (
        socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET))),
    # the personalities Docker allows: PER_LINUX, PER_LINUX32, UNAME26 and the query; others
    # turn off address randomisation, map page zero or make readable memory executable
    SeccompRule(("personality",), errno.EPERM, arg0_allowed=(0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)),
)


@dataclass
class PreparedJob:
    """What a spare needs to become the job (its stdin, stdout and stderr travel with the
    plan as file descriptors)."""

    job_id: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    hostname: str
    rootfs: str
    cgroup_procs: list[str]  # cgroup.procs files the job joins
    keep_caps: int  # capabilities the job keeps (all its sets); the bounding set drops the rest
    cap_last: int = 40  # the kernel's highest capability number
    ids: IdMap | None = None  # the job's user namespace (made by its spare); None: none
    writable_bytes: int | None = None  # size of the scratch tmpfs (its writable layer and /tmp)
    network: bool = False  # net="bridge": the fork server sets its network up when asked (op network)
    # Where each volume goes in the job, in the order of their detached mounts (sent after stdio).
    volumes: tuple[str, ...] = ()
    user: Credentials | None = None  # who the job runs as (users.py); None: its root, no lookups


def spare_plan(scratch: Scratch, keep_caps: int, cap_last: int, ids: IdMap | None = None) -> list[str]:
    """The spare's plan, ending with "wait". The job's writable layer and /tmp live on a
    tmpfs at scratch.path in the spare's own mount namespace: no disk I/O on the start path,
    nothing on the host to clean up, and what the job writes is charged to its memory cgroup."""
    plan = [
        "name", "lclusterd:spare",  # until exec names it after the job
        "pdeathsig", str(SIGKILL),  # die with the fork server while no job is ours
        "closefds",  # hold none of the fork server's descriptors
        # A session of its own: a Ctrl-C or SIGHUP meant for the daemon's terminal or
        # process group must not reach the job, whose end is the runtime's to decide.
        "setsid",
    ]
    # With a user namespace, the network namespace comes with it (the userns op).
    namespaces = SPARE_NAMESPACES & ~kernel.CLONE_NEWNET if ids is not None else SPARE_NAMESPACES
    plan += [
        "step", "unshare namespaces", "unshare", f"{namespaces:x}",
        "step", "mount propagation", *_mount_tokens(mounts.Op("mount", "/", None, None, kernel.MS_REC | kernel.MS_PRIVATE)),
        "step", "scratch tmpfs",
        *_mount_tokens(mounts.Op("mount", scratch.path, "scratch", "tmpfs", mounts.NOSUID_NODEV, "mode=755")),
        "umask", "0",
        *[token for path in (scratch.upper, scratch.work, scratch.root, scratch.lower) for token in ("mkdir", path, "755")],
        "mkdir", scratch.tmp, "1777",
    ]
    if ids is not None:
        plan += ["step", "user namespace", "userns", str(ids.uid), str(ids.gid), str(ids.count)]
    plan += ["step", "loopback up", "loopback"]
    if ids is None:  # with a user namespace, entering it resets the bounding set: the job drops it then
        plan += ["step", "capability bounding set", "bounding", f"{keep_caps:x}", str(cap_last)]
    return plan + ["wait"]


def job_plan(job: PreparedJob, scratch: Scratch) -> list[str]:
    """The job's plan: from a prepared spare to exec. Ends with exec."""
    plan = ["step", "start", "pdeathsig", "0"]  # the job may outlive the fork server
    # Join first, so every later process of the job is born inside its cgroup.
    plan += ["step", "join cgroup", *[token for procs in job.cgroup_procs for token in ("cgroup", procs)]]
    # NEWCGROUP after the join makes the job's cgroup the root of its view.
    plan += ["step", "unshare cgroup namespace", "unshare", f"{kernel.CLONE_NEWCGROUP:x}"]
    plan += ["step", "stdio", "stdio"]
    plan += ["umask", "0"]  # mount points and files get exactly the modes planned
    plan += _writable_layer(job, scratch)
    lowerdir = job.rootfs
    if job.ids is not None:
        plan += ["step", "idmapped rootfs", "idmap", job.rootfs, scratch.lower]
        lowerdir = scratch.lower
    if job.network:  # the network namespace and the writable layer exist; /etc/hosts goes in before the overlay
        plan += ["step", "network", "network"]
    plan += ["step", "mount rootfs", *_mount_plan(scratch, lowerdir, before_pivot=True)]
    plan += _places(job, scratch)
    plan += ["step", "pivot_root", "pivot", scratch.root]
    plan += ["step", "mask /proc", *_mount_plan(scratch, lowerdir, before_pivot=False)]
    plan += ["umask", "22"]
    plan += ["step", "hostname", "hostname", job.hostname]
    if job.ids is not None:
        plan += ["step", "user namespace", "setuser"]
        plan += ["step", "capability bounding set", "bounding", f"{job.keep_caps:x}", str(job.cap_last)]
    user_tokens, keep = _user(job)
    plan += user_tokens
    plan += ["step", "no_new_privs", "nnp"]
    plan += ["step", "capabilities", "capset", f"{keep:x}"]
    plan += ["step", "seccomp", "seccomp", _default_seccomp()]
    # exec finds the command (PATH from the job's environment), marks every fd but stdio
    # close-on-exec, enters cwd and execs, naming each of those steps itself.
    env = [f"{name}={value}" for name, value in job.env.items()]
    plan += ["exec", job.cwd, job.env.get("PATH", ""), str(len(job.argv)), *job.argv, str(len(env)), *env]
    return plan


@dataclass(frozen=True)
class PreparedExec:
    """What a command run inside a running job needs (execs.py; its stdio are fds 0-2)."""

    job_pid: int  # the job's init, by its host pid
    user_namespace: bool  # the job has one of its own (entered last)
    cgroup_procs: tuple[str, ...]
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    keep_caps: int
    cap_last: int
    user: Credentials | None = None  # the job's user; None: its root


ENTERED_NAMESPACES = (kernel.CLONE_NEWNS | kernel.CLONE_NEWNET | kernel.CLONE_NEWIPC | kernel.CLONE_NEWUTS
                      | kernel.CLONE_NEWCGROUP)


def exec_plan(e: PreparedExec) -> list[str]:
    """A command entering a running job (jobinit/enter.c): the parent joins the job's PID
    namespace for its child and waits; the child joins the job's cgroup (host paths), its
    namespaces, its user namespace last, then becomes one of the job's processes as the job's
    own plan made it: the bounding set, its user, no_new_privs, capabilities, seccomp, exec."""
    plan = ["now", "name", "lclusterd:exec", "pdeathsig", str(SIGKILL), "closefds", "nodump", "setsid",
            "step", "enter the job", "pidfd", str(e.job_pid), "setns", f"{kernel.CLONE_NEWPID:x}", "forkwait",
            "pdeathsig", str(SIGKILL),  # the child's, with its waiting parent (a fork clears it)
            "step", "join cgroup", *[token for procs in e.cgroup_procs for token in ("cgroup", procs)],
            "step", "enter the job", "setns", f"{ENTERED_NAMESPACES:x}"]
    if e.user_namespace:
        plan += ["setns", f"{kernel.CLONE_NEWUSER:x}"]
    plan += ["step", "capability bounding set", "bounding", f"{e.keep_caps:x}", str(e.cap_last)]
    user = e.user or (Credentials(0, 0) if e.user_namespace else None)  # host root is no id in the job's namespace
    if user is not None:
        groups = ",".join(str(gid) for gid in user.groups)
        plan += ["step", "user", "ids", str(user.uid), str(user.gid), groups, "pdeathsig", str(SIGKILL)]
    keep = e.keep_caps if user is None or user.is_root else 0
    plan += ["step", "no_new_privs", "nnp", "step", "capabilities", "capset", f"{keep:x}",
             "step", "seccomp", "seccomp", _default_seccomp()]
    env = [f"{name}={value}" for name, value in e.env.items()]
    return plan + ["exec", e.cwd, e.env.get("PATH", ""), str(len(e.argv)), *e.argv, str(len(env)), *env]


def _user(job: PreparedJob) -> tuple[list[str], int]:
    """The op that makes the job its user (after the bounding set: dropping it takes
    CAP_SETPCAP, which leaving uid 0 takes away), and the capabilities it keeps then."""
    if job.user is None:
        return [], job.keep_caps
    # Groups and gid before the uid: both need CAP_SETGID, which leaving uid 0 takes away.
    groups = ",".join(str(gid) for gid in job.user.groups)
    tokens = ["step", "user", "ids", str(job.user.uid), str(job.user.gid), groups]
    # Leaving uid 0 clears the permitted and effective sets; the inheritable set goes too, so
    # a user other than root holds no capability at all. The bounding set stays the kept set
    # (as Docker's), and no_new_privs keeps a setuid file from raising anything from it.
    return tokens, job.keep_caps if job.user.is_root else 0


@functools.lru_cache(maxsize=8)
def _mount_plan(scratch: Scratch, lowerdir: str, before_pivot: bool) -> tuple[str, ...]:
    """The tokens of the mount table before or after pivot_root: the same for every job of a
    node (one scratch, one or two lower directories), so made once (60 us a job before)."""
    ops = mounts.plan_before_pivot(scratch, lowerdir) if before_pivot else mounts.plan_after_pivot()
    return tuple(token for op in ops for token in _op_tokens(op))


@functools.lru_cache(maxsize=1)
def _default_seccomp() -> str:
    """seccomp_token(SECCOMP_RULES), the same for every job, made once."""
    return seccomp_token(SECCOMP_RULES)


def _writable_layer(job: PreparedJob, scratch: Scratch) -> list[str]:
    """Cap the scratch tmpfs (the job's writable layer and /tmp together) at the job's size,
    and hand its directories to the job's root."""
    plan = ["step", "writable layer"]
    if job.writable_bytes is not None:
        remount = mounts.Op("mount", scratch.path, None, None, kernel.MS_REMOUNT | mounts.NOSUID_NODEV,
                            f"size={job.writable_bytes}")
        plan += _mount_tokens(remount)
    if job.ids is not None:
        for path in (scratch.upper, scratch.tmp):
            plan += ["chown", path, str(job.ids.uid), str(job.ids.gid)]
    return plan


def _places(job: PreparedJob, scratch: Scratch) -> list[str]:
    """The working directory and the volumes' mount points made in the job's own layer, then
    each volume moved onto its place, outer before inner. Every path is resolved inside the
    job's root (RESOLVE_IN_ROOT: an image's symbolic links stay in it), and every directory
    made before any volume is mounted, so none is ever made in a host directory."""
    owner = [str(job.ids.uid), str(job.ids.gid)] if job.ids is not None else ["-1", "-1"]
    plan = []
    for path in ([job.cwd] if job.cwd != "/" else []) + list(job.volumes):
        plan += ["step", f"directory {path}", "mkdirs", scratch.root, path, *owner]
    for index, path in sorted(enumerate(job.volumes), key=lambda item: item[1].count("/")):
        plan += ["step", f"volume {path}", "volume", scratch.root, path, str(index)]
    return plan


def _mount_tokens(op: mounts.Op) -> list[str]:
    return ["mount", op.source or "", op.target, op.fstype or "", str(op.flags), op.data or ""]


def _op_tokens(op: mounts.Op) -> list[str]:
    if op.kind == "mount":
        return _mount_tokens(op)
    if op.kind == "mkdir":
        return ["mkdir", op.target, "755"]
    if op.kind == "file":
        return ["file", op.target]
    if op.kind == "symlink":
        return ["symlink", op.source or "", op.target]
    if op.kind in ("mask", "readonly"):  # both skip a path this kernel does not have
        return [op.kind, op.target]
    raise ValueError(f"unknown mount plan op {op.kind!r}")


def ops(tokens: list[str]) -> Iterator[tuple[str, list[str]]]:
    """Split a plan into (op, arguments), as jobinit.c reads it; ValueError on a plan it
    would refuse."""
    i = 0
    while i < len(tokens):
        name = tokens[i]
        if name not in ARITY:
            raise ValueError(f"unknown op {name!r}")
        count = ARITY[name] if ARITY[name] >= 0 else len(tokens) - i - 1
        if i + 1 + count > len(tokens):
            raise ValueError(f"op {name} needs {count} arguments")
        yield name, tokens[i + 1:i + 1 + count]
        i += 1 + count


def encode(tokens: list[str]) -> bytes:
    """A job plan as jobinit.c receives it: a 4-byte big-endian length, then the tokens,
    each ending in NUL. ValueError on a token that holds a NUL itself."""
    # One join and one encode (a token's own NUL shows as one NUL too many): a generator over
    # the ~250 tokens of a job plan cost the fork server 0.1 ms a job, this 0.01.
    joined = "\0".join(tokens)
    if joined.count("\0") != max(len(tokens) - 1, 0):
        raise ValueError("a plan token contains a NUL byte")
    body = joined.encode() + b"\0" if tokens else b""
    return struct.pack(">I", len(body)) + body
