"""Thin ctypes wrappers over the few libc calls the fork server makes that Python 3.11 does
not expose (the job's own set-up calls are in the C job init, jobinit/jobinit.c), and the
kernel constants the plans use.

Each wrapper raises OSError(errno, "call(args): strerror") so a failure names the call
and its arguments. Functions are looked up by name in libc, never by syscall number.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(ret: int, call: str) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), f"setns({fd}, {nstype:#x})")


RENAME_NOREPLACE = 1  # fail with EEXIST rather than replace
RENAME_EXCHANGE = 2  # swap the two entries, in one step
AT_FDCWD = -100


def rename(old: str, new: str, flags: int) -> None:
    """renameat2(2), which os.rename lacks: the image store's atomic install and swap."""
    call = _libc.renameat2  # glibc 2.28; looked up when used, so an older libc still imports this module
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    _check(call(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags), f"renameat2({old}, {new}, {flags:#x})")


OPEN_TREE_CLONE = 0x1
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4


class MountAttr(ctypes.Structure):
    """struct mount_attr (linux/mount.h)."""

    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def open_tree(fd: int, flags: int) -> int:
    """open_tree(fd, "", AT_EMPTY_PATH | flags): with OPEN_TREE_CLONE, a detached copy of
    the mount at fd (glibc 2.36; looked up when used, as renameat2)."""
    call = _libc.open_tree
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    ret = call(fd, b"", AT_EMPTY_PATH | flags)
    _check(ret, f"open_tree({fd}, {flags:#x})")
    return ret


def mount_setattr(fd: int, flags: int, attr: MountAttr) -> None:
    call = _libc.mount_setattr
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.POINTER(MountAttr), ctypes.c_size_t]
    _check(call(fd, b"", AT_EMPTY_PATH | flags, ctypes.byref(attr), ctypes.sizeof(attr)),
           f"mount_setattr({fd}, set {attr.attr_set:#x}, propagation {attr.propagation:#x})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    ret = _libc.prctl(option, arg2, arg3, arg4, arg5)
    _check(ret, f"prctl({option}, {arg2})")
    return ret


def set_process_name(name: str) -> None:
    """PR_SET_NAME takes a pointer; the kernel keeps the first 15 bytes."""
    buf = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(PR_SET_NAME, ctypes.cast(buf, ctypes.c_void_p).value or 0, 0, 0, 0), f"prctl(PR_SET_NAME, {name})")


POSIX_SPAWN_SETSIGDEF = 0x04
POSIX_SPAWN_SETSIGMASK = 0x08
_SPAWN_STATE = 512  # bytes for a posix_spawn_file_actions_t or posix_spawnattr_t (glibc: 80 and 336)
_SIGSET = 128  # sizeof(sigset_t) in glibc


def posix_spawn(path: str, argv: list[str], dup2: list[tuple[int, int]], default_signals: list[int]) -> int:
    """posix_spawn(3) of `path` with an empty environment, file actions dup2(*pair) for each
    pair of `dup2`, in order, an empty signal mask and the default disposition for
    `default_signals`; the child's pid.

    What os.posix_spawn(path, argv, {}, file_actions=[(POSIX_SPAWN_DUP2, *pair) for pair in dup2],
    setsigmask=(), setsigdef=default_signals) does, through ctypes, which lets go of the GIL
    while libc waits for the child's exec (its vfork); os.posix_spawn holds the GIL meanwhile,
    so no other thread of the process ran during a spawn (spares.py)."""
    actions, attr = ctypes.create_string_buffer(_SPAWN_STATE), ctypes.create_string_buffer(_SPAWN_STATE)
    empty, default = ctypes.create_string_buffer(_SIGSET), ctypes.create_string_buffer(_SIGSET)
    _libc.sigemptyset(empty)
    _libc.sigemptyset(default)
    for signum in default_signals:
        _libc.sigaddset(default, signum)
    argv_c = (ctypes.c_char_p * (len(argv) + 1))(*[os.fsencode(arg) for arg in argv], None)
    env_c = (ctypes.c_char_p * 1)(None)
    pid = ctypes.c_int()
    _spawn_check(_libc.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init")
    try:
        for pair in dup2:
            _spawn_check(_libc.posix_spawn_file_actions_adddup2(actions, *pair), f"posix_spawn_file_actions_adddup2{pair}")
        _spawn_check(_libc.posix_spawnattr_init(attr), "posix_spawnattr_init")
        try:
            _spawn_check(_libc.posix_spawnattr_setsigmask(attr, empty), "posix_spawnattr_setsigmask")
            _spawn_check(_libc.posix_spawnattr_setsigdefault(attr, default), "posix_spawnattr_setsigdefault")
            _spawn_check(_libc.posix_spawnattr_setflags(attr, ctypes.c_short(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)),
                         "posix_spawnattr_setflags")
            _spawn_check(_libc.posix_spawn(ctypes.byref(pid), os.fsencode(path), actions, attr, argv_c, env_c),
                         f"posix_spawn({path})")
        finally:
            _libc.posix_spawnattr_destroy(attr)
    finally:
        _libc.posix_spawn_file_actions_destroy(actions)
    return pid.value


def _spawn_check(err: int, call: str) -> None:
    """The posix_spawn family returns an error number instead of setting errno."""
    if err:
        raise OSError(err, f"{call}: {os.strerror(err)}")
