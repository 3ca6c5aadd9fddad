"""`lclient -exec UUID CMD` with real nodes: a command run inside a running job sees what the
job sees (its hostname, its processes, its root, its user) and is held as the job is (its
cgroup, capabilities, seccomp filter); its output and status come back to lclient; a job that
is not running, an unknown one, a command not in its root and a command that outlives its
client are each handled with one line and nothing left behind; through another node too."""

from __future__ import annotations

import os
import hashlib
import signal
import subprocess
import urllib.request

import pytest

from support.jobs import add, check, until
from support.processes import LCLIENT


@pytest.fixture
def node(cluster):
    return cluster.daemon("ex1", extra=["--capacity", "8"])


def running(node, command: str = "sleep 300", *args: str) -> str:
    job = add(node, command, *args)
    until(lambda: check(node, job)["state"] == "RUNNING", f"job {job} to run")
    return job


def test_a_command_runs_as_one_of_the_jobs_processes(node):
    job = running(node, "echo started; sleep 300", "-run-as", "nobody", "-mem", "64M")
    record = check(node, job)
    result = node.lclient("-exec", job, "hostname; id -u; ps -o pid,comm | tail -n +2; cat /proc/self/cgroup; "
                                        "grep CapEff /proc/self/status; unshare -n true; echo unshare=$?; "
                                        "echo to-stderr >&2; exit 7")
    assert result.returncode == 7, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == job[:12] and lines[1] == "65534"  # its hostname and its user (-run-as)
    processes = [line.split() for line in lines[2:] if line.split()[0].isdigit()]
    assert processes[0] == ["1", "sleep"]  # its PID namespace: the job's command is PID 1
    assert all(line.endswith(":/") for line in lines if ":" in line and line.split(":")[0].isdigit())  # its cgroup ns
    assert "CapEff:\t0000000000000000" in result.stdout  # nobody holds no capability, as the job's own
    assert "unshare=1" in result.stdout and "to-stderr" in result.stderr  # its seccomp filter
    assert check(node, job)["state"] == "RUNNING" and record["host_pid"] == check(node, job)["host_pid"]
    assert node.lclient("-logs", job).stdout == "started\n"  # an exec's output is its caller's, not the job's log
    assert node.lclient("-exec", job, "kill -9 $$").returncode == 128 + 9
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=10).read().decode()
    assert "lclusterd_execs_total 2.0" in scraped  # counted by the node that ran them
    assert node.lclient("-kill", job).returncode == 0


def test_a_command_takes_its_input_with_stdin(node):
    job = running(node)
    data = "".join(f"line {i}\n" for i in range(12000)).encode()  # ~100 KiB, more than a pipe holds
    result = node.lclient("-exec", job, "cat > /tmp/got; wc -c < /tmp/got; md5sum < /tmp/got", "-stdin", "-", stdin=data)
    assert result.returncode == 0, result.stderr
    count, digest = result.stdout.split()[:2]
    assert (int(count), digest) == (len(data), hashlib.md5(data).hexdigest())
    assert node.lclient("-exec", job, "cat", stdin=b"ignored").stdout == ""  # no -stdin: /dev/null
    big = node.lclient("-exec", job, "cat", "-stdin", "-", stdin=b"x" * (300 << 10))
    assert big.returncode == 2 and "more than the limit of 256 KiB" in big.stderr, big.stderr
    assert node.lclient("-check", job, "-stdin", "-").returncode == 2  # -stdin goes with -add or -exec
    assert node.lclient("-kill", job).returncode == 0


def test_what_cannot_run_is_one_line(node):
    job = running(node)
    missing = node.lclient("-exec", job, "exec /no/such/binary")  # the job's shell says so, and exits 127
    assert missing.returncode == 127 and missing.stderr.count("\n") == 1, missing.stderr
    ended = add(node, "true", "-wait")
    refused = node.lclient("-exec", ended, "true")
    assert refused.returncode == 1 and refused.stderr == f"lclient: job {ended} is EXITED: a command runs only in a running job\n"
    unknown = node.lclient("-exec", "0" * 32, "true")
    assert unknown.returncode == 1 and "no job" in unknown.stderr and unknown.stderr.count("\n") == 1, unknown.stderr
    assert node.lclient("-exec", "nonsense", "true").returncode == 2
    assert node.lclient("-exec", job, "").returncode == 2  # an empty command
    assert node.lclient("-kill", job).returncode == 0


def test_the_command_ends_with_its_client_and_with_its_job(node):
    job = running(node)
    client = subprocess.Popen([LCLIENT, "-exec", job, "echo in; sleep 600"], env={**os.environ, "LCLUSTER_SERVER": node.server},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert client.stdout.readline() == "in\n"
    sleepers = lambda: node.lclient("-exec", job, "ps -o comm | grep -c '^sleep'").stdout.strip()  # noqa: E731
    assert sleepers() == "2"  # the job's and the exec's
    client.send_signal(signal.SIGINT)
    client.wait(30)
    until(lambda: sleepers() == "1", "the exec's sleep to end with its client")
    other = subprocess.Popen([LCLIENT, "-exec", job, "sleep 600"], env={**os.environ, "LCLUSTER_SERVER": node.server},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    until(lambda: sleepers() == "2", "the second exec to run")
    assert node.lclient("-kill", job).returncode == 0
    assert other.wait(30) == 128 + signal.SIGTERM  # the job's kill signals every process of the job: it too
    until(lambda: check(node, job)["state"] == "KILLED", "the job to end")


def test_a_command_runs_in_a_job_on_another_node(cluster):
    a = cluster.daemon("ex-a")
    b = cluster.daemon("ex-b")
    job = add(a, "sleep 300", "-node", "ex-b")
    until(lambda: check(a, job)["state"] == "RUNNING", "the job to run on ex-b")
    result = a.lclient("-exec", job, "hostname")
    assert (result.returncode, result.stdout) == (0, job[:12] + "\n"), result.stderr
    assert b.lclient("-kill", job).returncode == 0
