"""Containment, probed as an attacker would: from inside real jobs, through real daemons and
lclient, and with the numbers a careless or hostile user might pass. Every probe here once
got through: host devices opened from a job, a timeout that stopped the node, a job that
could take the host's memory or fill its disk with output, pids beyond the kernel's, and
root in a job that was root on the host.

The runtime-level probes (marked v2vm) also run in the pure cgroup v2 VM (make test-v2).
"""

from __future__ import annotations

import math
import os
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest

from lclusterd.rpc import lclusterd_pb2 as pb
from lclusterd.rpc import lclusterd_pb2_grpc as pb_grpc
from lclusterd.runtime import bpf, channel, devices, userns
from lclusterd.runtime.spec import RuntimeSpec

from support.host import CGROUP_ROOT, CGROUP_VERSION, remove_cgroup_parent
from support.jobs import add, check, until
from support.processes import NodeProcess

NODE_MEMORY = 2 << 30
MAX_PIDS = 2000


def _node(tmp_path_factory, etcd, name: str, *extra: str):
    directory = tmp_path_factory.mktemp(name)
    daemon = NodeProcess(directory, etcd.endpoint, f"/test-{name}", name,
                         ["--memory", str(NODE_MEMORY), "--default-mem", "64M", "--max-pids", str(MAX_PIDS),
                          "--max-log-size", "1M", *extra])
    daemon.start()
    return daemon


@pytest.fixture(scope="module")
def node(tmp_path_factory, module_etcd):
    """A node with its defaults but small ceilings: jobs in user namespaces of their own."""
    daemon = _node(tmp_path_factory, module_etcd, "contain")
    yield daemon
    assert daemon.stop() == 0
    remove_cgroup_parent(daemon.name)


@pytest.fixture(scope="module")
def root_node(tmp_path_factory, module_etcd):
    """The same with --userns off: a job's root is the host's root."""
    daemon = _node(tmp_path_factory, module_etcd, "contain-nouserns", "--userns", "off")
    yield daemon
    assert daemon.stop() == 0
    remove_cgroup_parent(daemon.name)


def run_job(daemon: NodeProcess, command: str, *args: str) -> tuple[dict, str, str]:
    """Add a job, wait for it; its record (-check -json), stdout and stderr."""
    job = add(daemon, command, *args)
    daemon.lclient("-wait", job, timeout=120)
    record = check(daemon, job)
    return record, _log(daemon, job, "out"), _log(daemon, job, "err")


def _log(daemon: NodeProcess, job: str, stream: str) -> str:
    """What the job wrote on `stream` ("" for a stream it never wrote to: it has no file)."""
    path = Path(daemon.state_dir, "logs", f"{job}.{stream}")
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(params=["userns", "no-userns"])
def any_node(request, node, root_node):
    return node if request.param == "userns" else root_node


# -- host devices -----------------------------------------------------------------------

@pytest.fixture
def loop_device(tmp_path):
    """A host loop device over a root-only file that holds a secret."""
    backing = tmp_path / "secret.img"
    backing.write_bytes(b"TOP-SECRET-HOST-DATA" + b"\0" * (1 << 20))
    backing.chmod(0o600)
    device = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, check=True).stdout.strip()
    yield device, backing
    subprocess.run(["losetup", "-d", device], check=True)


def test_a_job_cannot_read_or_overwrite_a_host_loop_device(any_node, loop_device):
    device, backing = loop_device
    minor = os.minor(os.stat(device).st_rdev)
    record, out, err = run_job(any_node, f"mknod /dev/l5 b 7 {minor}; head -c 40 /dev/l5; echo OVERWRITE > /dev/l5; "
                                         f"mknod /tmp/l6 b 7 {minor}; head -c 40 /tmp/l6")
    assert record["state"] == "EXITED"
    assert "TOP-SECRET" not in out and backing.read_bytes().startswith(b"TOP-SECRET-HOST-DATA")
    # mknod refused: no CAP_MKNOD (and in a user namespace never a device); /dev is not even writable there
    assert "mknod: /dev/l5: " in err and "mknod: /tmp/l6: Operation not permitted" in err, err


def test_a_job_cannot_write_the_hosts_kernel_log(any_node):
    marker = f"lclusterd-probe-{uuid.uuid4().hex}"
    record, _, err = run_job(any_node, f"mknod /dev/k c 1 11 && echo {marker} > /dev/k")
    assert record["state"] == "EXITED" and record["exit_code"] != 0 and "mknod: /dev/k: " in err
    assert marker not in subprocess.run(["dmesg"], capture_output=True, text=True).stdout


def test_losetup_in_a_job_attaches_nothing_on_the_host(any_node):
    before = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    record, _, _ = run_job(any_node, "dd if=/dev/zero of=/tmp/img bs=64k count=16 2>/dev/null; losetup -f /tmp/img")
    assert record["state"] == "EXITED" and record["exit_code"] != 0
    assert subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout == before


@pytest.mark.v2vm
def test_runtime_a_jobs_writable_mounts_are_nodev_and_it_lacks_mknod(runtime, rootfs, tmp_path):
    job = RuntimeSpec.shell(uuid.uuid4().hex, "grep -E ' / | /tmp | /dev | /dev/shm ' /proc/mounts; grep CapBnd /proc/self/status",
                            rootfs, stdout_path=str(tmp_path / "out"), stderr_path=str(tmp_path / "err"))
    assert runtime.launcher.run(job, timeout=60).exit_code == 0
    lines = (tmp_path / "out").read_text().splitlines()
    mounts = {line.split()[1]: line.split()[3].split(",") for line in lines if not line.startswith("CapBnd")}
    assert set(mounts) == {"/", "/tmp", "/dev", "/dev/shm"} and all("nodev" in opts for opts in mounts.values())
    bounding = int(lines[-1].split()[1], 16)
    assert not bounding & (1 << 27)  # CAP_MKNOD


@pytest.mark.v2vm
def test_runtime_every_job_is_under_the_nodes_device_rules(runtime, rootfs):
    job = RuntimeSpec.shell(uuid.uuid4().hex, "sleep 30", rootfs)
    runtime.launcher.submit(job)
    try:
        procs = until(lambda: runtime.launcher.running() and _procs_of(runtime, job.job_id), "the job in its cgroup", timeout=5)
        pid = next(int(p) for p in procs)
        if CGROUP_VERSION == 1:  # the devices controller of the node's parent, deny-all and the allow-list
            member = next(line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":devices:" in line)
            assert member.endswith(f":/{runtime.cgroup_parent}")
            rules = Path(f"/sys/fs/cgroup/devices/{runtime.cgroup_parent}/devices.list").read_text().splitlines()
            assert rules == [rule.v1_line() for rule in devices.ALLOWED]
        else:  # the parent's BPF device program, which the job's cgroup inherits
            attached = bpf.attached_device_programs(f"/sys/fs/cgroup/{runtime.cgroup_parent}")
            assert len(attached[1]) == 1
    finally:
        runtime.launcher.kill(job.job_id, grace=0)
        runtime.launcher.wait(job.job_id, timeout=30)


def _procs_of(runtime, job_id: str) -> list[str]:
    base = Path("/sys/fs/cgroup") if CGROUP_VERSION == 2 else Path("/sys/fs/cgroup/pids")
    procs = base / runtime.cgroup_parent / job_id / "cgroup.procs"
    return procs.read_text().split() if procs.exists() else []


# -- who a job's root is ------------------------------------------------------------------

def host_ids(pid: int) -> tuple[list[int], list[int]]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(line for line in status if line.startswith("Uid:")).split()[1:]
    gid = next(line for line in status if line.startswith("Gid:")).split()[1:]
    return [int(u) for u in uid], [int(g) for g in gid]


def test_a_jobs_root_is_an_unprivileged_uid_on_the_host(node, root_node):
    ranges = userns.subordinate_ranges()
    for daemon, inside_range in ((node, True), (root_node, False)):
        job = add(daemon, "id -u > /tmp/x; sleep 30")
        uids, gids = host_ids(until(lambda: check(daemon, job)["host_pid"], "the job to run", timeout=30))
        if inside_range:
            assert len(set(uids)) == 1 and ranges.uids.start <= uids[0] < ranges.uids.start + ranges.uids.count, uids
            assert len(set(gids)) == 1 and ranges.gids.start <= gids[0] < ranges.gids.start + ranges.gids.count, gids
            assert (uids[0] - ranges.uids.start) % userns.SLOT_SIZE == 0
        else:
            assert uids == [0, 0, 0, 0]
        assert daemon.lclient("-kill", job).returncode == 0


def test_two_jobs_at_once_are_two_different_host_uids(node):
    jobs = [add(node, "sleep 30") for _ in range(2)]
    pids = [until(lambda: check(node, job)["host_pid"], "the job to run", timeout=30) for job in jobs]
    assert len({host_ids(pid)[0][0] for pid in pids}) == 2
    for job in jobs:
        node.lclient("-kill", job)


@pytest.mark.v2vm
def test_runtime_inside_its_user_namespace_the_rootfs_is_roots_and_writable(runtime, rootfs, tmp_path):
    command = "id -u; stat -c %u /bin/busybox /etc/passwd /root /; echo x > /root/f && echo x > /tmp/f && stat -c %u /root/f /tmp/f"
    job = RuntimeSpec.shell(uuid.uuid4().hex, command, rootfs, stdout_path=str(tmp_path / "out"), stderr_path=str(tmp_path / "err"))
    result = runtime.launcher.run(job, timeout=60)
    assert (result.status, result.exit_code, (tmp_path / "err").read_text()) == ("EXITED", 0, "")
    assert (tmp_path / "out").read_text().split() == ["0"] * 7


# -- the node survives any spec ---------------------------------------------------------------

def test_long_timeouts_run_and_absurd_ones_are_refused_with_one_line(node):
    record, out, _ = run_job(node, "echo ran", "-timeout", "600h")
    assert (record["state"], record["limits"]["timeout_seconds"], out) == ("EXITED", 600 * 3600, "ran\n")
    for value in ("400d", "9" * 300):
        result = node.lclient("-add", "true", "-timeout", value)
        assert result.returncode == 2 and result.stdout == "", result
        assert result.stderr.startswith("lclient: timeout must be more than 0 and at most 365 days (31536000 s)")
        assert result.stderr.count("\n") == 1
    with grpc.insecure_channel(node.server) as channel_:
        stub = pb_grpc.JobsStub(channel_)
        for value in (math.inf, math.nan, -1.0):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Add(pb.AddRequest(spec=pb.JobSpec(command="true", timeout_seconds=value)), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert run_job(node, "echo still here")[1] == "still here\n"


@pytest.mark.parametrize("args, line", [
    (["-pids", "100000"], f"lclient: -pids 100000 is more than node contain allows its jobs in all (the most: {MAX_PIDS} on contain)"),
    (["-pids", "4194305"], "lclient: pids limit must be between 1 and 4194304, not 4194305"),
    (["-pids", "1000000000000"], "lclient: bad -pids value '1000000000000': must be at most 2147483647"),
    (["-mem", "100G"], "lclient: -mem 100.0 GiB is more than node contain offers its jobs (the most: 2.0 GiB on contain)"),
    (["-mem", "2048T"], "lclient: memory limit must be between 1 MiB and 1 PiB, not 2251799813685248 bytes"),
    (["-cpus", "100000"], "lclient: cpus must be between 0.01 and 4096, not 100000"),
    (["-cpus", "4000"], f"lclient: -cpus 4000 is more than node contain has (the most: {os.cpu_count()} cores on contain)"),
])
def test_limits_no_node_can_give_are_refused_at_add(node, args, line):
    result = node.lclient("-add", "true", *args)
    assert (result.returncode, result.stderr, result.stdout) == (2, line + "\n", "")


@pytest.mark.v2vm
def test_runtime_fork_server_refuses_hostile_messages_and_keeps_running(runtime, rootfs, tmp_path):
    launcher = runtime.launcher
    hostile = [
        {"type": "Start", "spec": {"job_id": "a" * 32, "argv": ["true"], "rootfs": rootfs, "timeout": 1e300}},
        {"type": "Start", "spec": {"job_id": "b" * 32, "argv": "true", "rootfs": rootfs}},
        {"type": "Start", "spec": {"job_id": "c" * 32, "argv": ["true"], "rootfs": rootfs, "pids": 10**40}},
        {"type": "Start", "spec": {"job_id": "d" * 32, "argv": ["true"], "rootfs": rootfs, "memory_bytes": -5}},
        {"type": "Start", "spec": {"job_id": "e" * 32, "argv": ["true"], "rootfs": rootfs, "grace": float("inf")}},
        {"type": "Kill", "job_id": "x", "grace": -1e308},
        {"type": "Start"},
        {"type": "Nonsense"},
        {"op": "start", "spec": {}},
        ["not", "an", "object"],
    ]
    with launcher._send_lock:
        for message in hostile:
            channel.send(launcher._sock, message)
    job = RuntimeSpec.shell(uuid.uuid4().hex, "echo alive", rootfs, stdout_path=str(tmp_path / "out"),
                            stderr_path=str(tmp_path / "err"), timeout=600 * 3600.0)
    assert launcher.run(job, timeout=60).exit_code == 0 and (tmp_path / "out").read_text() == "alive\n"


# -- memory, pids and disk ------------------------------------------------------------------

def available_memory() -> int:
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable:"))
    return int(line.split()[1]) * 1024


def test_a_job_without_mem_gets_the_nodes_default_and_its_disk_fills_at_half(node):
    before = available_memory()
    record, out, err = run_job(node, "dd if=/dev/zero of=/tmp/big bs=1M count=5000; echo $?; du -sk /tmp/big")
    status, size = out.split("\n")[:2]
    assert record["state"] == "EXITED" and status == "1" and "No space left on device" in err
    assert 31 << 10 <= int(size.split()[0]) <= 32 << 10  # KiB: half of --default-mem 64M
    assert before - available_memory() < 200 << 20
    record, _, _ = run_job(node, "x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived")
    assert record["state"] == "OOM_KILLED"


def parent_cgroup_file(node: NodeProcess, controller: str, name: str) -> str:
    base = Path("/sys/fs/cgroup")
    parent = Path(CGROUP_ROOT, node.name, name)
    path = base / parent if CGROUP_VERSION == 2 else base / controller / parent
    return path.read_text().strip()


def test_the_nodes_jobs_together_have_its_memory_and_pids_ceilings(node):
    memory_file = "memory.max" if CGROUP_VERSION == 2 else "memory.limit_in_bytes"
    assert int(parent_cgroup_file(node, "memory", memory_file)) == NODE_MEMORY
    assert int(parent_cgroup_file(node, "pids", "pids.max")) == MAX_PIDS


def test_jobs_spinning_on_every_core_do_not_starve_their_node(node):
    """Jobs without -cpus may take every core; the node must still keep its lease (TTL 2 s here),
    report, and answer: its jobs are one cgroup, weighed against the daemon as one."""
    spinners = [add(node, "while :; do :; done", "-pids", "4") for _ in range(2 * (os.cpu_count() or 2))]
    until(lambda: all(check(node, job)["state"] == "RUNNING" for job in spinners), "the spinning jobs to start")
    deadline = time.monotonic() + 8  # four lease TTLs
    while time.monotonic() < deadline:
        result = node.lclient("-add", "echo alive", "-follow", timeout=60)
        assert (result.returncode, result.stdout) == (0, "alive\n"), result.stderr
    assert {check(node, job)["state"] for job in spinners} == {"RUNNING"}  # never declared lost
    assert "node lease expired" not in node.log() and "keep-alive" not in node.log(), node.log()[-2000:]
    for job in spinners:
        assert node.lclient("-kill", job).returncode == 0
    until(lambda: all(check(node, job)["state"] == "KILLED" for job in spinners), "the spinners to be killed")


def test_300_mib_of_output_is_cut_at_the_log_cap_with_one_marker_line(node):
    record, out, _ = run_job(node, "yes | head -c 314572800; echo done >&2")
    assert record["state"] == "EXITED" and record["exit_code"] == 0
    assert out[:1 << 20] == "y\n" * (1 << 19)
    assert out[1 << 20:] == "[lclusterd: stdout cut at 1.0 MiB (--max-log-size); the rest is dropped]\n"
    assert record["output_dropped_bytes"] == {"stdout": 314572800 - (1 << 20), "stderr": 0}
    text = node.lclient("-check", record["id"]).stdout
    assert "output cut:  stdout reached the node's log limit (--max-log-size); 299M more was dropped" in text


# -- system calls that no namespace covers ------------------------------------------------------

@pytest.fixture(scope="module")
def probe_binary(tmp_path_factory) -> Path:
    """data/seccomp_probe.c, static: it makes each guarded call in a child of its own."""
    binary = tmp_path_factory.mktemp("probe") / "seccomp_probe"
    source = Path(__file__).parent / "data" / "seccomp_probe.c"
    subprocess.run(["musl-gcc", "-static", "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def test_io_uring_and_vsock_fail_in_a_real_job_while_inet_works(any_node, probe_binary):
    # The probe arrives as the job's stdin and runs from its /tmp (nodev and nosuid, not noexec).
    record, out, _ = run_job(any_node, "cat > /tmp/probe && chmod +x /tmp/probe && /tmp/probe", "-stdin", str(probe_binary))
    assert record["state"] == "EXITED" and record["exit_code"] == 0
    results = dict(line.split(" ", 1) for line in out.splitlines())
    assert results["io_uring_setup"] == "Function not implemented"
    assert results["socket-vsock"] == "Address family not supported by protocol"
    assert results["socket-inet"] == "ok" and results["socket-unix"] == "ok"
