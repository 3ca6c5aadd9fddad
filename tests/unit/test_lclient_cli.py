"""lclient's parsing, output and exit codes, against a fake JobsClient (no daemon)."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest

from lclient import cli, errors
from lclient.client import JobsClient, Target
from lclient.units import format_size, parse_cpus, parse_duration, parse_size
from lclusterd.rpc import lclusterd_pb2 as pb
from lclusterd.rpc.metadata import ERROR_METADATA_KEY

JOB = "0123456789abcdef0123456789abcdef"
POOL = "fedcba9876543210fedcba9876543210"


class FakeClient:
    """Records calls; returns canned replies; raises `fail` if set."""

    def __init__(self, server, fail=None, job=None):
        self.server, self.fail, self.calls = server, fail, []
        self.job = job or pb.Job(id=JOB, state="EXITED", exit_code=0, node="n1", spec=pb.JobSpec(command="true"))

    def _record(self, name, *args):
        self.calls.append((name, args))
        if self.fail:
            raise self.fail

    def add(self, spec, all_nodes=False, array=None):
        self._record("add", spec, all_nodes, *([array] if array is not None else []))
        if array is not None:
            return pb.AddReply(id=POOL, job=pb.Job(id=POOL, state="QUEUED", spec=spec, is_array=True))
        if all_nodes:
            return pb.AddReply(id=POOL, job=pb.Job(id=POOL, state="QUEUED", spec=spec, is_pool=True))
        return pb.AddReply(id=JOB, job=pb.Job(id=JOB, state="QUEUED", spec=spec))

    def check(self, job_id):
        self._record("check", job_id)
        return self.job

    def kill(self, job_id):
        self._record("kill", job_id)
        if self.job.is_pool:
            return self.job
        return pb.Job(id=job_id, state="RUNNING", kill_requested=True)

    def add_batch(self, specs):
        self._record("add_batch", specs)
        return [pb.Job(id=f"{i:032x}", state="QUEUED", spec=spec) for i, spec in enumerate(specs, 1)]

    def list(self, states=None, limit=0, expand_arrays=False):
        self._record("list", states, limit, *([True] if expand_arrays else []))
        return [self.job]

    def nodes(self):
        self._record("nodes")
        return [pb.Node(name="n1", address="localhost:64051", capacity=4, running=1, prime=True)]

    def logs(self, job_id, follow=False):
        self._record("logs", job_id, follow)
        yield pb.LogChunk(stream=pb.LogChunk.STDOUT, data=b"out\n")
        yield pb.LogChunk(stream=pb.LogChunk.STDERR, data=b"err\n")

    def wait(self, job_id, timeout=None):
        self._record("wait", job_id, timeout)
        return self.job

    def exec(self, job_id, command, stdin=b""):
        self._record("exec", job_id, command, stdin)
        yield pb.ExecChunk(stream=pb.LogChunk.STDOUT, data=b"out\n")
        yield pb.ExecChunk(stream=pb.LogChunk.STDERR, data=b"err\n")
        yield self.ended

    def close(self):
        pass


def run(argv, capsys, **fake):
    made = []

    def factory(target):
        made.append(FakeClient(target.server, **fake))
        made[-1].target = target
        return made[-1]

    code = cli.run(argv, factory)
    out, err = capsys.readouterr()
    return code, out, err, made[0] if made else None


@pytest.mark.parametrize("argv", [["-add", "echo hi"], ["--add", "echo hi"], ["-add=echo hi"], ["--add=echo hi"]])
def test_add_forms_print_uuid_alone(argv, capsys):
    code, out, err, client = run(argv, capsys)
    assert (code, out, err) == (0, JOB + "\n", "")
    assert client.calls[0][1][0].command == "echo hi"


def test_add_options_reach_the_spec(capsys, tmp_path):
    stdin = tmp_path / "in"
    stdin.write_bytes(b"data")
    code, _, _, client = run(["-add", "x", "-mem", "64M", "-cpus", "0.5", "-pids", "64", "-timeout", "2m",
                              "-env", "A=1", "-env", "B=x=y", "-stdin", str(stdin), "-retries", "2"], capsys)
    spec = client.calls[0][1][0]
    assert code == 0
    assert (spec.memory_bytes, spec.cpus, spec.pids, spec.timeout_seconds, dict(spec.env), spec.stdin, spec.retries) == \
        (64 << 20, 0.5, 64, 120.0, {"A": "1", "B": "x=y"}, b"data", 2)


def test_unset_limits_stay_unset(capsys):
    _, _, _, client = run(["-add", "x"], capsys)
    spec = client.calls[0][1][0]
    assert not spec.HasField("memory_bytes") and not spec.HasField("pids") and not spec.HasField("timeout_seconds")


def test_server_option_and_env(capsys, monkeypatch):
    assert run(["-server", "h:1", "-list"], capsys)[3].server == "h:1"
    monkeypatch.setenv("LCLUSTER_SERVER", "e:2")
    assert run(["-list"], capsys)[3].server == "e:2"


def test_tls_options_and_env(capsys, monkeypatch):
    monkeypatch.delenv("LCLUSTER_SERVER", raising=False)
    target = run(["-tls-dir", "/d", "-user", "ann", "-list"], capsys)[3].target
    assert (target.server, target.tls_dir, target.user) == ("127.0.0.1:64051", "/d", "ann")  # TLS means TCP
    monkeypatch.setenv("LCLUSTER_TLS_DIR", "/e")
    monkeypatch.setenv("LCLUSTER_USER", "bob")
    target = run(["-server", "unix:/s", "-list"], capsys)[3].target
    assert (target.server, target.tls_dir, target.user, target.is_unix) == ("unix:/s", "/e", "bob", True)


def test_default_server_is_the_local_socket_when_usable(monkeypatch, tmp_path):
    from lclient import client
    monkeypatch.delenv("LCLUSTER_SERVER", raising=False)
    monkeypatch.delenv("LCLUSTER_TLS_DIR", raising=False)
    monkeypatch.setattr(client, "LOCAL_SOCKET", str(tmp_path / "none.sock"))
    assert client.Target.choose().server == "127.0.0.1:64051"
    (tmp_path / "none.sock").touch()
    assert client.Target.choose().server == f"unix:{tmp_path}/none.sock"
    assert client.Target.choose(tls_dir="/d").server == "127.0.0.1:64051"


def test_missing_certificate_is_exit_2(capsys, tmp_path):
    code = cli.run(["-server", "127.0.0.1:1", "-tls-dir", str(tmp_path), "-user", "ann", "-list"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "lclusterd certs user" in err, err


@pytest.mark.parametrize("job, status", [
    (pb.Job(id=JOB, state="EXITED", exit_code=7), 7),
    (pb.Job(id=JOB, state="KILLED", signal=9), 137),
    (pb.Job(id=JOB, state="OOM_KILLED"), 137),
    (pb.Job(id=JOB, state="TIMED_OUT", signal=9), 124),
    (pb.Job(id=JOB, state="FAILED", error="exec: x not found"), 1),
    (pb.Job(id=JOB, state="CANCELLED"), 1),
])
def test_wait_exit_status_is_the_jobs(job, status, capsys):
    code, out, err, _ = run(["-wait", JOB], capsys, job=job)
    assert code == status
    if job.state != "EXITED":
        assert err.startswith(f"lclient: job {JOB} ended {job.state}")


def test_add_then_wait(capsys):
    code, out, _, client = run(["-add", "exit 7", "-wait"], capsys, job=pb.Job(id=JOB, state="EXITED", exit_code=7))
    assert (code, out) == (7, JOB + "\n")
    assert [c[0] for c in client.calls] == ["add", "wait"]


def test_wait_timeout_value(capsys):
    _, _, _, client = run(["-wait", JOB, "-timeout", "1.5s"], capsys)
    assert client.calls == [("wait", (JOB, 1.5))]


def test_logs_go_to_their_streams(capsys):
    code, out, err, client = run(["-logs", JOB, "-follow"], capsys)
    assert (code, out, err) == (0, "out\n", "err\n")
    assert client.calls == [("logs", (JOB, True))]


def test_add_follow_streams_the_output_then_exits_with_the_jobs_status(capsys):
    failed = pb.Job(id=JOB, state="EXITED", exit_code=3)
    code, out, err, client = run(["-add", "x", "-follow"], capsys, job=failed)
    assert (code, out, err) == (3, "out\n", f"lclient: job {JOB}\nerr\n")
    assert [c[0] for c in client.calls] == ["add", "logs", "wait"] and client.calls[1] == ("logs", (JOB, True))
    code, out, err, client = run(["-wait", JOB, "-follow"], capsys, job=pb.Job(id=JOB, state="KILLED", signal=9))
    assert (code, out) == (137, "out\n") and err.endswith(f"lclient: job {JOB} ended KILLED (SIGKILL)\n")


def test_json_outputs(capsys):
    code, out, _, _ = run(["-check", JOB, "-json"], capsys)
    data = json.loads(out)
    assert (data["schema_version"], data["id"], data["state"], data["exit_code"]) == (1, JOB, "EXITED", 0)
    code, out, _, _ = run(["-nodes", "-json"], capsys)
    assert json.loads(out)["state"] == "prime"
    code, out, _, _ = run(["-list", "-json"], capsys)
    assert [json.loads(line)["id"] for line in out.splitlines()] == [JOB]


def test_tables(capsys):
    _, out, _, _ = run(["-list", "-state", "exited", "-limit", "5"], capsys)
    assert out.splitlines()[0].split() == ["ID", "STATE", "NODE", "OWNER", "AGE", "COMMAND"]
    _, out, _, _ = run(["-nodes"], capsys)
    assert out.splitlines()[1].split() == ["n1", "localhost:64051", "prime", "4", "1", "-"]
    _, out, _, _ = run(["-check", JOB], capsys)
    assert "state:" in out and "EXITED (exit code 0)" in out


@pytest.mark.parametrize("argv, line", [
    ([], "lclient: give exactly one of -add, -check, -kill, -list, -nodes, -logs, -wait, -drain, -undrain, -web, -events, -images, -exec (given: none); see lclient -help"),
    (["-check", JOB, "-kill", JOB], "lclient: give exactly one of -add, -check, -kill, -list, -nodes, -logs, -wait, -drain, -undrain, -web, -events, -images, -exec "
                                    "(given: -check, -kill); see lclient -help"),
    (["-check"], "lclient: Option '-check' requires an argument."),
    (["-add", "x", "-mem", "lots"], "lclient: bad -mem value 'lots': expected a size like 64M or 1G"),
    (["-add", "x", "-env", "A"], "lclient: bad -env value 'A': expected NAME=VALUE"),
    (["-add", "x", "-stdin", "/no/such/file"], "lclient: cannot read -stdin file /no/such/file: No such file or directory"),
    (["-check", JOB, "-follow"], "lclient: -follow goes with -logs, -add or -wait"),
    (["-add", "x", "-follow", "-all-nodes"], "lclient: -follow prints one job's output; leave out -all-nodes "
                                             "(or -logs -follow a member)"),
    (["-add", "x", "-follow", "-json"], "lclient: -follow prints the job's output; leave out -json"),
    (["-wait", JOB, "-follow", "-timeout", "5s"], "lclient: -follow waits until the job ends; leave out -timeout"),
    (["-list", "-timeout", "1s"], "lclient: -timeout goes with -add or -wait"),
    (["-wait"], "lclient: -wait needs a job uuid (or -add CMD)"),
    (["-check", JOB, "-all-nodes"], "lclient: -all-nodes goes with -add"),
    (["-list", "-all-nodes"], "lclient: -all-nodes goes with -add"),
    (["-add", "x", "-all-nodes", "-node", "n1"], "lclient: -all-nodes runs a copy on every ready node; leave out -node"),
])
def test_usage_errors_are_one_line_exit_2(argv, line, capsys):
    code, out, err, _ = run(argv, capsys)
    assert (code, out, err) == (2, "", line + "\n")


@pytest.mark.parametrize("error, code", [
    (errors.NotFound(f"no job with uuid {JOB}"), 1),
    (errors.InvalidRequest("malformed uuid 'x': expected 32 hex digits"), 2),
    (errors.ServerUnreachable("cannot reach lclusterd at h:1"), 3),
    (errors.Unavailable("etcd down"), 3),
    (errors.WaitTimeout("still RUNNING"), 124),
])
def test_client_errors_map_to_exit_codes(error, code, capsys):
    got, out, err, _ = run(["-check", JOB], capsys, fail=error)
    assert (got, out, err) == (code, "", f"lclient: {error}\n")


def test_unexpected_error_is_one_line(capsys):
    code, _, err, _ = run(["-check", JOB], capsys, fail=RuntimeError("boom"))
    assert (code, err) == (1, "lclient: internal error: RuntimeError: boom\n")


@pytest.mark.parametrize("text, value", [("64M", 64 << 20), ("1g", 1 << 30), ("512k", 512 << 10), ("100", 100), ("1.5M", 3 << 19),
                                         ("64MiB", 64 << 20), ("2MB", 2 << 20)])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text, value", [("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25), ("2", 2), ("0.5s", 0.5)])
def test_parse_duration(text, value):
    assert parse_duration(text) == value


@pytest.mark.parametrize("parser, text", [(parse_size, "12Q"), (parse_size, "0"), (parse_size, "-1M"), (parse_duration, "0s"),
                                          (parse_duration, "soon"), (parse_cpus, "0"), (parse_cpus, "nan"), (parse_cpus, "x")])
def test_parse_rejects(parser, text):
    with pytest.raises(ValueError):
        parser(text)


def test_format_size():
    assert (format_size(64 << 20), format_size(1 << 30), format_size(100)) == ("64M", "1G", "100B")
    # not a whole number of a unit (a node's default --memory: MemTotal less 10 %): one decimal
    assert (format_size(int(21.6 * (1 << 30))), format_size(1500), format_size((3 << 39) + 1)) == ("21.6G", "1.5K", "1.5T")


def member(node, job_id, state, **fields):
    return pb.Job(id=job_id, state=state, node=node, pool=POOL, spec=pb.JobSpec(command="uname -n", node=node), **fields)


def pool_job(state, *members, **fields):
    return pb.Job(id=POOL, state=state, is_pool=True, spec=pb.JobSpec(command="uname -n"), members=list(members), **fields)


A, B, C = "a" * 32, "b" * 32, "c" * 32


def test_add_all_nodes_asks_for_a_pool_and_prints_its_uuid_alone(capsys):
    code, out, err, client = run(["-add", "uname -n", "-all-nodes"], capsys)
    assert (code, out, err) == (0, POOL + "\n", "")
    spec, all_nodes = client.calls[0][1]
    assert (spec.command, spec.node, all_nodes) == ("uname -n", "", True)
    _, _, _, client = run(["-add", "uname -n"], capsys)
    assert client.calls[0][1][1] is False


def test_check_of_a_pool_shows_the_summary_and_every_member(capsys):
    pool = pool_job("RUNNING", member("a", A, "EXITED", exit_code=0), member("b", B, "KILLED", signal=9),
                    member("c", C, "RUNNING", kill_requested=True), kill_requested=True)
    code, out, _, _ = run(["-check", POOL], capsys, job=pool)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["id:", POOL]
    assert "state:    RUNNING (kill requested) (2 of 3 members ended)" in lines
    assert "members:" in lines
    table = lines[lines.index("members:") + 1:]
    assert table[0].split() == ["NODE", "JOB", "STATE", "EXIT"]
    assert [row.split() for row in table[1:]] == [["a", A, "EXITED", "0"], ["b", B, "KILLED", "SIGKILL"],
                                                   ["c", C, "RUNNING", "(kill", "requested)", "-"]]


def test_pool_json_has_its_members_as_job_documents(capsys):
    pool = pool_job("EXITED", member("a", A, "EXITED", exit_code=0), member("b", B, "EXITED", exit_code=0), exit_code=0)
    code, out, _, _ = run(["-check", POOL, "-json"], capsys, job=pool)
    data = json.loads(out)
    assert (code, data["id"], data["is_pool"], data["pool"], data["state"], data["exit_code"]) == (0, POOL, True, None, "EXITED", 0)
    assert [(m["node"], m["id"], m["pool"], m["is_pool"], m["pinned_node"]) for m in data["members"]] == \
        [("a", A, POOL, False, "a"), ("b", B, POOL, False, "b")]
    assert set(data["members"][0]) == set(data) - {"members"}  # a member is an ordinary job document
    _, out, _, _ = run(["-check", JOB, "-json"], capsys)
    assert (json.loads(out)["is_pool"], json.loads(out)["pool"], "members" in json.loads(out)) == (False, None, False)


@pytest.mark.parametrize("pool, status, line", [
    (pool_job("EXITED", member("a", A, "EXITED", exit_code=0), exit_code=0), 0, ""),
    (pool_job("EXITED", member("a", A, "EXITED", exit_code=0), member("b", B, "EXITED", exit_code=3), exit_code=3,
              error=f"member {B} on node b ended EXITED with exit code 3"),
     3, f"lclient: pool {POOL} ended EXITED (exit code 3): member {B} on node b ended EXITED with exit code 3\n"),
    (pool_job("KILLED", member("a", A, "KILLED", signal=9), signal=9, error=f"member {A} on node a ended KILLED"),
     137, f"lclient: pool {POOL} ended KILLED (SIGKILL): member {A} on node a ended KILLED\n"),
])
def test_wait_on_a_pool_exits_with_the_first_failing_members_status(pool, status, line, capsys):
    code, _, err, _ = run(["-wait", POOL], capsys, job=pool)
    assert (code, err) == (status, line)


def test_kill_of_a_pool_lists_its_members(capsys):
    pool = pool_job("RUNNING", member("a", A, "RUNNING", kill_requested=True), member("b", B, "CANCELLED"), kill_requested=True)
    code, out, _, _ = run(["-kill", POOL], capsys, job=pool)
    lines = out.splitlines()
    assert (code, lines[0]) == (0, f"{POOL} RUNNING (kill requested)")
    assert [row.split()[:3] for row in lines[2:]] == [["a", A, "RUNNING"], ["b", B, "CANCELLED"]]


def test_wait_explains_an_exit_the_daemon_gave_a_reason_for(capsys):
    job = pb.Job(id=JOB, state="EXITED", exit_code=127,
                 error="the job's shell could not find a command in the rootfs (sh: x: not found)")
    code, out, err, _ = run(["-wait", JOB], capsys, job=job)
    assert code == 127 and err == (f"lclient: job {JOB} ended EXITED (exit code 127): the job's shell "
                                   "could not find a command in the rootfs (sh: x: not found)\n")
    code, out, err, _ = run(["-wait", JOB], capsys, job=pb.Job(id=JOB, state="EXITED", exit_code=3))
    assert (code, err) == (3, "")  # a plain non-zero exit speaks for itself


@pytest.mark.parametrize("argv, line", [
    (["-add", "echo \udcff"], "lclient: the command is not valid UTF-8 (byte 0xff at offset 5)"),
    (["-add", "x", "-env", "A=\udcfe"], "lclient: an -env value is not valid UTF-8 (byte 0xfe at offset 2)"),
    (["-add", "x", "-node", "n\udcff"], "lclient: the -node name is not valid UTF-8 (byte 0xff at offset 1)"),
    (["-check", "\udcff"], "lclient: the -check argument is not valid UTF-8 (byte 0xff at offset 0)"),
    (["-list", "-state", "\udcc3"], "lclient: the -state argument is not valid UTF-8 (byte 0xc3 at offset 0)"),
])
def test_arguments_that_are_not_utf8_are_one_line_exit_2(argv, line, capsys):
    """Invalid UTF-8 on the command line reaches Python as surrogates, which gRPC cannot send."""
    code, out, err, client = run(argv, capsys)
    assert (code, out, err) == (2, "", line + "\n")
    assert client is None or client.calls == []


class _RpcError(grpc.RpcError):
    def __init__(self, code, details, metadata=()):
        self._code, self._details, self._metadata = code, details, metadata

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._metadata


def test_a_request_the_transport_finds_too_large_is_invalid_input():
    client = JobsClient(Target("127.0.0.1:1"))
    try:
        error = client._translate(_RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                            "SERVER: Received message larger than max (5000017 vs. 4194304)"))
        busy = client._translate(_RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "this node already serves 192 waits",
                                           ((ERROR_METADATA_KEY, "TooBusy"),)))
    finally:
        client.close()
    assert isinstance(error, errors.InvalidRequest) and error.exit_code == 2
    assert str(error) == ("the request is too large for lclusterd at 127.0.0.1:1 (Received message larger than max "
                          "(5000017 vs. 4194304))")
    assert isinstance(busy, errors.Unavailable)


def test_add_with_an_image_sends_it_and_may_leave_the_command_to_the_image(capsys):
    code, out, err, client = run(["-add", "", "-image", "debian", "-env", "A=1"], capsys)
    assert (code, out, err) == (0, JOB + "\n", "")
    spec, _ = client.calls[0][1]
    assert (spec.command, spec.image, dict(spec.env)) == ("", "debian", {"A": "1"})
    code, out, err, _ = run(["-check", JOB, "-image", "debian"], capsys)
    assert (code, out, err) == (2, "", "lclient: -image goes with -add\n")


def test_check_shows_the_image_and_json_has_it(capsys):
    job = pb.Job(id=JOB, state="QUEUED", spec=pb.JobSpec(command="", image="debian"),
                 waiting="no ready node has the image 'debian'")
    code, out, _, _ = run(["-check", JOB], capsys, job=job)
    assert code == 0
    assert "command:" in out and "(the image's Entrypoint and Cmd)" in out
    assert [line.split() for line in out.splitlines() if line.startswith("image")] == [["image:", "debian"]]
    _, out, _, _ = run(["-check", JOB, "-json"], capsys, job=job)
    assert json.loads(out)["image"] == "debian"


def test_images_lists_every_image_of_every_node_that_is_not_gone(capsys, monkeypatch):
    nodes = [pb.Node(name="b", state="ready", images=["busybox", "debian"]), pb.Node(name="a", state="prime", images=["busybox"]),
             pb.Node(name="c", state="gone", images=["busybox"])]
    monkeypatch.setattr(FakeClient, "nodes", lambda self: nodes)
    code, out, err, _ = run(["-images"], capsys)
    assert (code, err) == (0, "")
    assert [line.split() for line in out.splitlines()] == [["NODE", "IMAGE"], ["a", "busybox"], ["b", "busybox"],
                                                           ["b", "debian"]]
    _, out, _, _ = run(["-images", "-json"], capsys)
    assert [(d["node"], d["image"]) for d in map(json.loads, out.splitlines())] == [
        ("a", "busybox"), ("b", "busybox"), ("b", "debian")]


def test_network_volume_and_workdir_options_reach_the_spec(capsys):
    code, _, _, client = run(["-add", "x", "-net", "bridge", "-publish", "18080:8080", "-publish", "53:53/udp",
                              "-volume", "/srv/data:/data:ro", "-volume", "/srv/out:/out", "-workdir", "/data"], capsys)
    spec = client.calls[0][1][0]
    assert code == 0
    assert (spec.net, list(spec.publish), list(spec.volumes), spec.workdir) == \
        ("bridge", ["18080:8080", "53:53/udp"], ["/srv/data:/data:ro", "/srv/out:/out"], "/data")


def test_a_job_without_those_options_asks_for_no_network():
    code = subprocess.run([sys.executable, "-c", "import sys; from lclient import cli; "
                           "assert 'lclusterd.limits' not in sys.modules and 'lclient.netopts' not in sys.modules"])
    assert code.returncode == 0  # lclient's start stays light: the checks load only for these options


@pytest.mark.parametrize("argv, line", [
    (["-net", "host"], "lclient: net must be none or bridge, not 'host'"),
    (["-net", "bridge", "-publish", "80"], "lclient: publish takes HOSTPORT:PORT or HOSTPORT:PORT/udp, not '80'"),
    (["-net", "bridge", "-publish", "99999:80"], "lclient: ports are between 1 and 65535, not 99999 (in '99999:80')"),
    (["-publish", "8080:80"], "lclient: publishing a port needs net=bridge (a job without a network has only loopback)"),
    (["-volume", "data:/data"], "lclient: volume paths must be absolute (and at most 1024 bytes), not 'data' "
                                "(in 'data:/data')"),
    (["-volume", "/srv:/data:rx"], "lclient: volume takes HOST:PATH or HOST:PATH:ro (absolute paths, no ':'), not "
                                   "'/srv:/data:rx'"),
    (["-workdir", "tmp"], "lclient: working directory must be absolute (and at most 1024 bytes), not 'tmp' (in 'tmp')"),
])
def test_malformed_network_and_volume_options_are_one_line_exit_2_before_any_call(argv, line, capsys):
    code, out, err, client = run(["-add", "x", *argv], capsys)
    assert (code, out, err) == (2, "", line + "\n")
    assert client is None or client.calls == []


def test_network_options_go_with_add(capsys):
    code, _, err, _ = run(["-check", JOB, "-net", "bridge"], capsys)
    assert (code, err) == (2, "lclient: -net goes with -add\n")


@pytest.mark.parametrize("ended, status, line", [
    (pb.ExecChunk(ended=True, exit_code=3), 3, ""),
    (pb.ExecChunk(ended=True, signal=9), 137, ""),
    (pb.ExecChunk(ended=True, error="find command: command not found in the rootfs: /bin/sh"), 127,
     f"lclient: 'id' did not run in job {JOB}: find command: command not found in the rootfs: /bin/sh\n"),
])
def test_exec_prints_the_output_and_exits_with_the_commands_status(capsys, ended, status, line):
    FakeClient.ended = ended
    code, out, err, client = run(["-exec", JOB, "id"], capsys)
    assert (code, out, err) == (status, "out\n", "err\n" + line)
    assert client.calls == [("exec", (JOB, "id", b""))]
