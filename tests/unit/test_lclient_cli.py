"""lclient's parsing, output and exit codes, against a fake JobsClient (no daemon)."""

from __future__ import annotations

import json

import pytest

from lclient import cli, errors
from lclient.units import format_size, parse_cpus, parse_duration, parse_size
from lclusterd.rpc import lclusterd_pb2 as pb

JOB = "0123456789abcdef0123456789abcdef"


class FakeClient:
    """Records calls; returns canned replies; raises `fail` if set."""

    def __init__(self, server, fail=None, job=None):
        self.server, self.fail, self.calls = server, fail, []
        self.job = job or pb.Job(id=JOB, state="EXITED", exit_code=0, node="n1", spec=pb.JobSpec(command="true"))

    def _record(self, name, *args):
        self.calls.append((name, args))
        if self.fail:
            raise self.fail

    def add(self, spec):
        self._record("add", spec)
        return pb.AddReply(id=JOB, job=pb.Job(id=JOB, state="QUEUED", spec=spec))

    def check(self, job_id):
        self._record("check", job_id)
        return self.job

    def kill(self, job_id):
        self._record("kill", job_id)
        return pb.Job(id=job_id, state="RUNNING", kill_requested=True)

    def list(self, states=None, limit=0):
        self._record("list", states, limit)
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

    def close(self):
        pass


def run(argv, capsys, **fake):
    made = []

    def factory(server):
        made.append(FakeClient(server, **fake))
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
    assert out.splitlines()[0].split() == ["ID", "STATE", "NODE", "AGE", "COMMAND"]
    _, out, _, _ = run(["-nodes"], capsys)
    assert out.splitlines()[1].split() == ["n1", "localhost:64051", "prime", "4", "1", "-"]
    _, out, _, _ = run(["-check", JOB], capsys)
    assert "state:" in out and "EXITED (exit code 0)" in out


@pytest.mark.parametrize("argv, line", [
    ([], "lclient: give exactly one of -add, -check, -kill, -list, -nodes, -logs, -wait, -drain, -undrain (given: none); see lclient -help"),
    (["-check", JOB, "-kill", JOB], "lclient: give exactly one of -add, -check, -kill, -list, -nodes, -logs, -wait, -drain, -undrain "
                                    "(given: -check, -kill); see lclient -help"),
    (["-check"], "lclient: Option '-check' requires an argument."),
    (["-add", "x", "-mem", "lots"], "lclient: bad -mem value 'lots': expected a size like 64M or 1G"),
    (["-add", "x", "-env", "A"], "lclient: bad -env value 'A': expected NAME=VALUE"),
    (["-add", "x", "-stdin", "/no/such/file"], "lclient: cannot read -stdin file /no/such/file: No such file or directory"),
    (["-check", JOB, "-follow"], "lclient: -follow goes with -logs"),
    (["-list", "-timeout", "1s"], "lclient: -timeout goes with -add or -wait"),
    (["-wait"], "lclient: -wait needs a job uuid (or -add CMD)"),
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
