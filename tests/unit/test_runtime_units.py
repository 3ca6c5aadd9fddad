"""Pure parts of the runtime: spec validation, size/duration parsing, the mount plan,
capability masks and the message channel. No root, no kernel state."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from lclusterd.errors import InvalidSpec
from lclusterd.runtime import caps, channel, mounts
from lclusterd.runtime.spec import RunResult, RuntimeSpec
from lclusterd.units import format_size, parse_duration, parse_size


def good_spec(**kw) -> RuntimeSpec:
    return RuntimeSpec(job_id="0" * 32, argv=["/bin/true"], rootfs="/r", **kw)


@pytest.mark.parametrize("changes, message", [
    ({"argv": []}, "empty command"),
    ({"argv": [""]}, "empty command"),
    ({"argv": ["a\0b"]}, "NUL byte"),
    ({"rootfs": "relative"}, "absolute path"),
    ({"rootfs": "/a,b"}, "must not contain"),
    ({"job_id": "../x"}, "invalid job id"),
    ({"env": {"A=B": "x"}}, "invalid environment variable name"),
    ({"cwd": "tmp"}, "working directory must be an absolute path"),
    ({"hostname": "-bad-"}, "invalid hostname"),
    ({"memory_bytes": 100}, "memory limit must be between 1 MiB and 1 PiB"),
    ({"memory_bytes": 1 << 60}, "memory limit must be between 1 MiB and 1 PiB"),
    ({"cpus": 0.0}, "cpus must be between"),
    ({"cpus": float(os.cpu_count() or 1) + 1}, "cpus must be between"),
    ({"cpus": float("nan")}, "cpus must be between"),
    ({"pids": 0}, "pids limit"),
    ({"pids": 10**12}, "pids limit"),
    ({"timeout": 0.0}, "timeout must be more than 0 and at most 365 days"),
    ({"timeout": 600 * 3600 * 24.0}, "at most 365 days"),
    ({"timeout": float("inf")}, "at most 365 days"),
    ({"timeout": float("nan")}, "at most 365 days"),
    ({"timeout": 10**400}, "at most 365 days"),
    ({"grace": -1.0}, "grace period"),
    ({"grace": float("inf")}, "grace period"),
    ({"stdout_path": "relative/out"}, "log paths must be absolute"),
    ({"max_log_bytes": 10}, "log cap must be at least"),
    ({"user": "a:b:c"}, "user 'a:b:c' is not USER or USER:GROUP"),
    ({"user": "4294967295"}, "ids go from 0 to 4294967294"),
])
def test_spec_validation_names_the_problem(changes, message):
    job = good_spec()
    for name, value in changes.items():
        setattr(job, name, value)
    with pytest.raises(InvalidSpec, match=message):
        job.validate()


def test_valid_spec_passes_and_round_trips_through_json():
    job = good_spec(env={"A": "1"}, memory_bytes=64 << 20, cpus=0.5, pids=10, timeout=3.0, stdin_data=b"\x00\xff",
                    user="app:1000")
    job.validate()
    assert RuntimeSpec.from_json(job.to_json()) == job
    result = RunResult(job_id=job.job_id, status="EXITED", exit_code=0)
    assert RunResult.from_json(result.to_json()) == result


def test_job_environment_is_clean_defaults_plus_spec():
    env = good_spec(env={"PATH": "/bin", "X": "y"}).job_environment()
    assert env == {"PATH": "/bin", "HOME": "/root", "HOSTNAME": "0" * 12, "X": "y"}
    # a User's home (runtime/users.py) is HOME unless the job's environment names one
    assert good_spec().job_environment("/home/app")["HOME"] == "/home/app"
    assert good_spec(env={"HOME": "/h"}).job_environment("/home/app")["HOME"] == "/h"


@pytest.mark.parametrize("text, size", [("1048576", 1 << 20), ("64M", 64 << 20), ("64MiB", 64 << 20),
                                        ("1.5G", 3 << 29), ("512k", 512 << 10), ("2gb", 2 << 30)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "12X", "-1M", "1 2M", "0"])
def test_parse_size_rejects_nonsense(text):
    with pytest.raises(ValueError, match="expected a size like 64M or 1G|at least 1 byte"):
        parse_size(text)


@pytest.mark.parametrize("text, seconds", [("30", 30), ("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5x", "1m 30s", "-5s", "0s"])
def test_parse_duration_rejects_nonsense(text):
    with pytest.raises(ValueError, match="expected a duration like 30s, 5m or 1h|must be positive"):
        parse_duration(text)


def test_format_size():
    assert [format_size(n) for n in (None, 512, 2048, 3 << 20)] == ["-", "512 B", "2.0 KiB", "3.0 MiB"]


def test_mount_plan_puts_overlay_first_and_pseudo_filesystems_under_the_root():
    scratch = mounts.Scratch("/j")
    plan = mounts.plan_before_pivot(scratch, "/j/lower")
    assert plan[0] == mounts.Op("mount", "/j/root", "overlay", "overlay", mounts.NOSUID_NODEV,
                                "lowerdir=/j/lower,upperdir=/j/upper,workdir=/j/work")
    mounted = [(op.target, op.fstype) for op in plan if op.kind == "mount" and op.fstype]
    assert mounted[1:] == [("/j/root/proc", "proc"), ("/j/root/dev", "tmpfs"), ("/j/root/dev/pts", "devpts"),
                           ("/j/root/dev/shm", "tmpfs"), ("/j/root/dev/mqueue", "mqueue"), ("/j/root/sys", "sysfs")]
    sysfs = next(op for op in plan if op.fstype == "sysfs")
    assert sysfs.flags & mounts.k.MS_RDONLY
    # Every mount point is made before it is mounted on.
    made = {op.target for op in plan if op.kind in ("mkdir", "file")}
    assert all(op.target in made for op in plan[1:] if op.kind == "mount" and not op.flags & mounts.k.MS_REMOUNT)


def test_everything_a_job_can_write_is_nodev_and_its_devices_are_host_binds():
    plan = mounts.plan_before_pivot(mounts.Scratch("/j"), "/rootfs")
    flags = {(op.target, op.fstype): op.flags for op in plan if op.kind == "mount"}
    for target in ("/j/root", "/j/root/dev", "/j/root/dev/shm", "/j/root/dev/mqueue", "/j/root/proc", "/j/root/sys"):
        assert next(f for (t, _), f in flags.items() if t == target) & mounts.k.MS_NODEV, target
    # /tmp is the scratch tmpfs's tmp directory, bound with nosuid and nodev
    tmp = [op for op in plan if op.target == "/j/root/tmp" and op.kind == "mount"]
    assert tmp[0].source == "/j/tmp" and tmp[0].flags == mounts.k.MS_BIND
    assert tmp[1].flags == mounts.k.MS_BIND | mounts.k.MS_REMOUNT | mounts.NOSUID_NODEV
    binds = {op.target: op.source for op in plan if op.kind == "mount" and op.flags == mounts.k.MS_BIND}
    for name, _major, _minor in mounts.DEVICES:
        assert binds[f"/j/root/dev/{name}"] == f"/dev/{name}"
    assert not any(op.kind == "mknod" for op in plan)


def test_after_pivot_plan_masks_and_protects_proc():
    plan = mounts.plan_after_pivot()
    assert {op.target for op in plan if op.kind == "mask"} == set(mounts.MASKED_PATHS)
    assert {op.target for op in plan if op.kind == "readonly"} == set(mounts.READONLY_PATHS)
    assert all(op.optional for op in plan)


def test_default_capabilities_are_dockers_without_mknod():
    keep = caps.mask_of(caps.DEFAULT_KEEP)
    assert bin(keep).count("1") == 13
    # Docker's CapEff (0xa80425fb) less CAP_MKNOD (bit 27)
    assert keep == 0xA80425FB & ~(1 << caps.CAPABILITIES["MKNOD"]) == 0xA00425FB
    assert not keep & (1 << caps.CAPABILITIES["SYS_ADMIN"])


def test_channel_carries_messages_and_file_descriptors():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    read_end, write_end = os.pipe()
    with left, right:
        def send_both() -> None:
            channel.send(left, {"op": "start", "n": 1})
            channel.send(left, {"op": "start", "big": "x" * 300_000}, [write_end])

        # A message larger than the socket buffer needs a reader while it is written.
        sender = threading.Thread(target=send_both)
        sender.start()
        assert channel.receive(right) == {"op": "start", "n": 1}
        message, fds = channel.receive_with_fds(right)
        sender.join()
        assert message["big"] == "x" * 300_000 and len(fds) == 1
        os.write(fds[0], b"through the passed fd")
        assert os.read(read_end, 100) == b"through the passed fd"
        for fd in (*fds, read_end, write_end):
            os.close(fd)
        left.close()
        with pytest.raises(channel.ChannelClosed):
            channel.receive(right)
