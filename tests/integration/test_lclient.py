"""lclient against one real lclusterd (real etcd, real containers): every command, every
error line, every exit status. The daemon is shared by the module (it only adds jobs)."""

from __future__ import annotations

import json
import grp
import os
import stat

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.host import remove_cgroup_parent
from support.jobs import add, check
from support.processes import NodeProcess, free_port, run_lclient


@pytest.fixture(scope="module")
def node(tmp_path_factory, module_etcd):
    daemon = NodeProcess(tmp_path_factory.mktemp("lclient") / "node", module_etcd.endpoint, "/test-lclient", "node1",
                         ["--capacity", "64"])
    daemon.start()
    yield daemon
    daemon.stop()
    remove_cgroup_parent(daemon.name)


def test_add_prints_uuid_alone_then_check_wait_and_logs(node):
    job = add(node, "echo out; echo err >&2; exit 3", quiet=True)
    assert len(job) == 32 and int(job, 16) >= 0

    waited = node.lclient("-wait", job)
    assert waited.returncode == 3
    assert waited.stdout == ""

    checked = node.lclient("-check", job)
    assert checked.returncode == 0
    assert "state:       EXITED (exit code 3)" in checked.stdout
    assert "node:        node1" in checked.stdout

    logs = node.lclient("-logs", job)
    assert (logs.returncode, logs.stdout, logs.stderr) == (0, "out\n", "err\n")


def test_add_forms_and_wait_with_add(node):
    for form in (["-add", "exit 5"], ["--add", "exit 5"], ["-add=exit 5"], ["--add=exit 5"]):
        result = node.lclient(*form, "-wait")
        assert result.returncode == 5, (form, result.stderr)
        assert len(result.stdout.strip()) == 32


def test_check_accepts_the_dashed_uuid(node):
    job = add(node, "true", quiet=True)
    dashed = f"{job[:8]}-{job[8:12]}-{job[12:16]}-{job[16:20]}-{job[20:]}"
    result = node.lclient("-check", dashed.upper())
    assert result.returncode == 0 and job in result.stdout


def test_check_json_is_stable(node):
    job = add(node, "exit 0", "-mem", "64M", "-cpus", "0.5", "-pids", "32", "-timeout", "30s", "-env", "A=1", quiet=True)
    assert node.lclient("-wait", job).returncode == 0
    data = check(node, job)
    assert data["schema_version"] == 1
    assert (data["id"], data["state"], data["exit_code"], data["node"]) == (job, "EXITED", 0, "node1")
    assert data["limits"] == {"memory_bytes": 64 << 20, "cpus": 0.5, "pids": 32, "timeout_seconds": 30.0}


def test_env_and_stdin_reach_the_job(node, tmp_path):
    data = tmp_path / "in.txt"
    data.write_text("from stdin\n")
    job = add(node, 'echo "$GREETING"; cat', "-env", "GREETING=hello", "-stdin", str(data), quiet=True)
    assert node.lclient("-wait", job).returncode == 0
    assert node.lclient("-logs", job).stdout == "hello\nfrom stdin\n"


def test_kill_running_job(node):
    job = add(node, "echo started; sleep 300", quiet=True)
    result = node.lclient("-kill", job)
    assert result.returncode == 0
    assert result.stdout.startswith(job)
    waited = node.lclient("-wait", job)
    assert waited.returncode in (128 + 9, 128 + 15)
    assert waited.stderr.startswith(f"lclient: job {job} ended KILLED (SIG")
    assert "killed by request" in waited.stderr
    again = node.lclient("-kill", job)
    assert (again.returncode, again.stderr) == (1, f"lclient: job {job} has already finished (KILLED)\n")


def test_logs_follow_streams_until_the_job_ends(node):
    job = add(node, "for i in 1 2 3; do echo line $i; sleep 0.2; done", quiet=True)
    result = node.lclient("-logs", job, "-follow")
    assert (result.returncode, result.stdout) == (0, "line 1\nline 2\nline 3\n")


def test_add_follow_runs_the_job_with_its_output_streamed_and_its_status(node):
    result = node.lclient("-add", "echo out; echo err >&2; sleep 0.3; echo late; exit 3", "-follow")
    assert (result.returncode, result.stdout) == (3, "out\nlate\n")
    first, *rest = result.stderr.splitlines()
    job = first.removeprefix("lclient: job ")
    assert len(job) == 32 and rest == ["err"]
    assert node.lclient("-check", job, "-json").stdout.count('"exit_code": 3') == 1
    followed = node.lclient("-wait", job, "-follow")  # an ended job: its output, then its status
    assert (followed.returncode, followed.stdout, followed.stderr) == (3, "out\nlate\n", "err\n")


def test_timeout_gives_timed_out_and_124(node):
    job = add(node, "sleep 30", "-timeout", "0.3s", quiet=True)
    waited = node.lclient("-wait", job)
    assert waited.returncode == 124
    assert node.lclient("-check", job, "-json").stdout.count('"state": "TIMED_OUT"') == 1


def test_wait_timeout_exits_124(node):
    job = add(node, "sleep 30", quiet=True)
    waited = node.lclient("-wait", job, "-timeout", "0.2s")
    assert waited.returncode == 124
    assert waited.stderr.startswith(f"lclient: job {job} is still ")
    node.lclient("-kill", job)


def test_a_command_not_found_in_the_rootfs_is_explained(node):
    # the command runs as /bin/sh -c CMD, so it is the job's shell that finds out (exit 127)
    for command, said in (("nosuchcmd --flag", "sh: nosuchcmd: not found"), ("exec /no/such/binary", "/no/such/binary: not found")):
        waited = node.lclient("-add", command, "-wait")
        job = waited.stdout.strip()
        assert waited.returncode == 127, waited
        assert waited.stderr.count("\n") == 1 and waited.stderr.startswith(
            f"lclient: job {job} ended EXITED (exit code 127): the job's shell could not find a command in the rootfs (")
        assert said in waited.stderr
        record = check(node, job)
        assert (record["state"], record["exit_code"]) == ("EXITED", 127) and said in record["error"]


def test_list_and_nodes(node):
    job = add(node, "true", quiet=True)
    node.lclient("-wait", job)
    listing = node.lclient("-list")
    assert listing.returncode == 0
    assert listing.stdout.splitlines()[0].split() == ["ID", "STATE", "NODE", "OWNER", "AGE", "COMMAND"]
    assert job in listing.stdout
    lines = node.lclient("-list", "-json", "-state", "exited").stdout.splitlines()
    assert all(json.loads(line)["state"] == "EXITED" for line in lines)
    assert job in {json.loads(line)["id"] for line in lines}
    nodes = node.lclient("-nodes", "-json")
    assert nodes.returncode == 0
    (entry,) = [json.loads(line) for line in nodes.stdout.splitlines()]
    assert (entry["name"], entry["state"], entry["capacity"]) == ("node1", "prime", 64)


@pytest.mark.parametrize("args, code, line", [
    (["-check", "nope"], 2, "lclient: malformed uuid 'nope': expected 32 hex digits"),
    (["-check", "0" * 32], 1, f"lclient: no job with uuid {'0' * 32}"),
    (["-kill", "0" * 32], 1, f"lclient: no job with uuid {'0' * 32}"),
    (["-logs", "0" * 32], 1, f"lclient: no job with uuid {'0' * 32}"),
    (["-wait", "0" * 32], 1, f"lclient: no job with uuid {'0' * 32}"),
    (["-add", ""], 2, "lclient: empty command"),
    (["-add", "   "], 2, "lclient: empty command"),
    (["-add", "x", "-mem", "12Q"], 2, "lclient: bad -mem value '12Q': expected a size like 64M or 1G"),
    (["-add", "x", "-cpus", "lots"], 2, "lclient: bad -cpus value 'lots': expected a number of cores like 0.5 or 2"),
    (["-add", "x", "-pids", "0"], 2, "lclient: bad -pids value '0': must be at least 1"),
    (["-add", "x", "-timeout", "soon"], 2, "lclient: bad -timeout value 'soon': expected a duration like 30s, 5m or 1h"),
    (["-add", "x", "-mem", "100"], 2, "lclient: memory limit must be between 1 MiB and 1 PiB, not 100 bytes"),
    (["-add", "x", "-env", "NOEQUALS"], 2, "lclient: bad -env value 'NOEQUALS': expected NAME=VALUE"),
    (["-list", "-state", "bogus"], 2, "lclient: unknown state 'BOGUS': expected one of QUEUED, ASSIGNED, RUNNING, "
                                      "EXITED, KILLED, OOM_KILLED, TIMED_OUT, FAILED, CANCELLED, LOST"),
    ([], 2, "lclient: give exactly one of -add, -check, -kill, -list, -nodes, -logs, -wait, -drain, -undrain, -web, -events, -images, -exec (given: none); see lclient -help"),
    (["-add", "x", "-check", "0" * 32], 2, "lclient: give exactly one of -add, -check, -kill, -list, -nodes, -logs, -wait, -drain, -undrain, -web, -events, -images, -exec "
                                           "(given: -add, -check); see lclient -help"),
    (["-check", "0" * 32, "-mem", "1M"], 2, "lclient: -mem goes with -add"),
])
def test_error_lines_and_exit_codes(node, args, code, line):
    result = node.lclient(*args)
    assert (result.returncode, result.stderr, result.stdout) == (code, line + "\n", "")


BAD_INPUT = {  # name: (arguments, stdin file bytes or None, the line after "lclient: ")
    "env of 1 MB": ([a for i in range(10) for a in ("-env", f"V{i}=" + "x" * 100_000)], None,
                    "the environment is 1000040 bytes, more than the limit of 64 KiB (names and values together)"),
    "env over 64 KiB": (["-env", "A=" + "x" * (64 << 10)], None,
                        "the environment is 65539 bytes, more than the limit of 64 KiB (names and values together)"),
    "command over 64 KiB": ([], None, "the command is 70000 bytes, more than the limit of 64 KiB"),
    "stdin over 256 KiB": (["-stdin"], 300 << 10, "stdin is 307200 bytes, more than the limit of 256 KiB"),
    "stdin over gRPC's 4 MiB": (["-stdin"], 5 << 20, "the request is too large for lclusterd at {server} (Received "
                                                      "message larger than max (5242896 vs. 4194304))"),
    "spec over 512 KiB as stored": (["-env", "A=" + "\x01" * 60_000], None,
                                    "the job's spec takes 720126 bytes as stored, more than the limit of 512 KiB "
                                    "(command, environment and stdin together, as JSON with stdin in base64)"),
    "pids beyond the API": (["-pids", "1000000000000"], None, "bad -pids value '1000000000000': must be at most 2147483647"),
    "pids beyond the kernel": (["-pids", "5000000"], None, "pids limit must be between 1 and 4194304, not 5000000"),
    "mem beyond the API": (["-mem", "99999999999G"], None, "bad -mem value '99999999999G': that is more bytes than the API "
                                                           "can carry"),
    "mem beyond 1 PiB": (["-mem", "2000T"], None, "memory limit must be between 1 MiB and 1 PiB, not 2199023255552000 bytes"),
    "command not UTF-8": ([], None, "the command is not valid UTF-8 (byte 0xff at offset 5)"),
    "env not UTF-8": (["-env", "A=\udcff"], None, "an -env value is not valid UTF-8 (byte 0xff at offset 2)"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(node, tmp_path, case):
    """Sizes, counts and encodings out of range are refused before anything is written, with
    the limit named, never "etcd unavailable" or an internal error (docs/errors.md)."""
    args, stdin_bytes, line = BAD_INPUT[case]
    command = {"command over 64 KiB": "x" * 70_000, "command not UTF-8": "echo \udcff",
               "spec over 512 KiB as stored": "\x01" * 60_000}.get(case, "true")
    if stdin_bytes is not None:
        (tmp_path / "in").write_bytes(b"x" * stdin_bytes)
        args = [*args, str(tmp_path / "in")]
    result = node.lclient("-add", command, *args)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"lclient: {line.format(server=node.server)}\n")
    assert node.lclient("-list", "-limit", "1").returncode == 0


def test_the_largest_specs_allowed_run_together(node, tmp_path):
    """Jobs at the size limits queue, are assigned and run even when many of them would share one
    transaction: the batches are cut by bytes too, under etcd's request size."""
    stdin = tmp_path / "in"
    stdin.write_bytes(b"y" * (256 << 10))
    args = ["-stdin", str(stdin), "-env", "A=" + "z" * 60_000, "-node", "node1"]
    assert node.lclient("-drain", "node1").returncode == 0  # they queue, then go out in one pass
    try:
        jobs = [add(node, "wc -c; echo ${#A}", *args, quiet=True) for _ in range(4)]
    finally:
        assert node.lclient("-undrain", "node1").returncode == 0
    for job in jobs:
        assert node.lclient("-wait", job).returncode == 0
        assert node.lclient("-logs", job).stdout.split() == [str(256 << 10), "60000"]


def test_unreachable_daemon():
    port = free_port()
    result = run_lclient("-list", server=f"127.0.0.1:{port}")
    assert result.returncode == 3
    assert result.stderr == (f"lclient: cannot reach lclusterd at 127.0.0.1:{port} "
                             "(is it running? choose another with -server or LCLUSTER_SERVER)\n")
    result = run_lclient("-server", f"127.0.0.1:{port}", "-check", "0" * 32)
    assert result.returncode == 3


def test_unix_socket_is_for_root_and_the_group_and_works(node):
    path = node.state_dir / "lclusterd.sock"
    info = os.stat(path)
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o660, 0, grp.getgrnam("lclusterd").gr_gid)
    result = run_lclient("-server", f"unix:{path}", "-nodes")
    assert result.returncode == 0 and "node1" in result.stdout
    private = node.state_dir / "private"  # the gRPC server's own socket: root only
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o700


def test_health_and_reflection(node):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(node.server) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="lclusterd.v1.Jobs"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"lclusterd.v1.Jobs", "grpc.health.v1.Health"} <= names
