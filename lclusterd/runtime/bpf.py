"""bpf(2) through ctypes: load a cgroup device program, attach it to a cgroup, and list
what a cgroup has attached. Only the cgroup v2 driver uses it.

glibc has no bpf() wrapper, so this is the one place that calls libc's syscall() with a
syscall number, from a per-architecture table. Each call raises OSError(errno,
"bpf(COMMAND, ...): strerror") naming the command and the cgroup, as kernel.py does.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

SYS_BPF = {"x86_64": 321, "aarch64": 280}

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6  # the attach type
LOG_SIZE = 1 << 16  # the verifier's explanation of a refused program
LICENSE = b"MIT"  # the project's; only GPL-only kernel helpers ask, and a device filter calls none

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _ProgLoad(ctypes.Structure):
    """union bpf_attr for BPF_PROG_LOAD, up to expected_attach_type; the kernel zero-fills
    the fields after the size it is given."""

    _fields_ = [
        ("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32), ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64), ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16), ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
    ]


class _ProgAttach(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32)]


class _ProgQuery(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32)]


def _bpf(command: int, attr: ctypes.Structure, call: str) -> int:
    number = SYS_BPF.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"{call}: no bpf syscall number for {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(number), ctypes.c_int(command), ctypes.byref(attr),
                        ctypes.c_uint(ctypes.sizeof(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}")
    return int(ret)


def load_device_program(instructions: bytes, name: str) -> int:
    """Load a BPF_PROG_TYPE_CGROUP_DEVICE program; returns its fd. A refused program's
    error carries the verifier's log (the load is retried with logging on to get it)."""
    insns = ctypes.create_string_buffer(instructions, len(instructions))
    license_buf = ctypes.create_string_buffer(LICENSE)
    attr = _ProgLoad(prog_type=BPF_PROG_TYPE_CGROUP_DEVICE, insn_cnt=len(instructions) // 8,
                     insns=ctypes.addressof(insns), license=ctypes.addressof(license_buf),
                     prog_name=name.encode()[:15])
    call = f"bpf(BPF_PROG_LOAD, cgroup_device {name})"
    try:
        return _bpf(BPF_PROG_LOAD, attr, call)
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EACCES, errno.EINVAL):  # the verifier may say why
            raise
        refused = error
    log = ctypes.create_string_buffer(LOG_SIZE)
    attr.log_level, attr.log_size, attr.log_buf = 1, LOG_SIZE, ctypes.addressof(log)
    try:
        return _bpf(BPF_PROG_LOAD, attr, call)
    except OSError as again:
        verifier = "; ".join(line for line in log.value.decode(errors="replace").splitlines() if line.strip())
        detail = f"{again.strerror} (verifier: {verifier})" if verifier else again.strerror
        raise OSError(again.errno, detail) from refused


def attach_device_program(cgroup_dir: str, program_fd: int, flags: int = 0) -> None:
    """Attach to a cgroup v2 directory. With flags 0 the cgroup holds one device program:
    a second attach replaces the first, and no descendant can attach its own."""
    with _open_dir(cgroup_dir) as fd:
        attr = _ProgAttach(target_fd=fd, attach_bpf_fd=program_fd, attach_type=BPF_CGROUP_DEVICE,
                           attach_flags=flags)
        _bpf(BPF_PROG_ATTACH, attr, f"bpf(BPF_PROG_ATTACH, {cgroup_dir}, BPF_CGROUP_DEVICE)")


def attached_device_programs(cgroup_dir: str) -> tuple[int, list[int]]:
    """(attach flags, ids of the device programs attached to the cgroup itself)."""
    ids = (ctypes.c_uint32 * 64)()
    with _open_dir(cgroup_dir) as fd:
        attr = _ProgQuery(target_fd=fd, attach_type=BPF_CGROUP_DEVICE, prog_ids=ctypes.addressof(ids),
                          prog_cnt=len(ids))
        _bpf(BPF_PROG_QUERY, attr, f"bpf(BPF_PROG_QUERY, {cgroup_dir}, BPF_CGROUP_DEVICE)")
    return attr.attach_flags, list(ids[:attr.prog_cnt])


@contextmanager
def _open_dir(path: str) -> Iterator[int]:
    """A directory fd for the bpf() call, closed after; the error names the path."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"open {path}: {e.strerror}") from e
    try:
        yield fd
    finally:
        os.close(fd)
