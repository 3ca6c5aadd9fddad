"""The node's metrics as an operator reads them: Debian's real Prometheus server scrapes a real
node while jobs run (one exits 0, one exits 3, one a shell without its command, one times
out, one is cut at the log cap, one keeps running), and what Prometheus's query API answers
agrees with what `lclient -list -json` says. docs/operations.md lists the metrics."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest

from support.etcd_readers import etcdctl
from support.jobs import add, check, until
from support.processes import free_port, kill_group

PROMETHEUS = "prometheus"  # Debian's package of that name (make test installs it)


class Prometheus:
    """A throwaway Prometheus server scraping `targets` every second, its data in `directory`."""

    def __init__(self, directory: Path, targets: list[str]):
        if shutil.which(PROMETHEUS) is None:
            raise RuntimeError("prometheus not found on PATH: `make test` installs Debian's package prometheus")
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "prometheus.yml"
        self.config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                               "scrape_configs:\n  - job_name: lclusterd\n    static_configs:\n"
                               f"      - targets: {json.dumps(targets)}\n")
        self.log = directory / "prometheus.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def query(self, expr: str) -> list[dict]:
        """The result vector of an instant query (each {"metric": labels, "value": [t, "v"]})."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def values(self, expr: str, label: str | None = None) -> dict[str, float]:
        """label value -> sample value (label None: {"": value} of a single sample)."""
        try:
            result = self.query(expr)
        except OSError:  # not listening yet
            return {}
        return {(r["metric"].get(label, "") if label else ""): float(r["value"][1]) for r in result}

    def stop(self) -> None:
        kill_group(self.process)


@pytest.fixture
def prometheus_for(tmp_path):
    started = []

    def start(targets: list[str]) -> Prometheus:
        server = Prometheus(tmp_path / "prometheus", targets)
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


def list_json(node) -> list[dict]:
    result = node.lclient("-list", "-json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def settled(prometheus: Prometheus, expr: str, expected: dict[str, float], label: str | None = None) -> dict[str, float]:
    """Wait until the query answers `expected` (Prometheus scrapes every second)."""
    seen: dict[str, dict] = {}

    def same() -> bool:
        seen["last"] = prometheus.values(expr, label)
        return seen["last"] == expected
    try:
        until(same, f"{expr} to be {expected}", timeout=60)
    except AssertionError:
        raise AssertionError(f"{expr}: Prometheus says {seen.get('last')}, expected {expected}\n"
                             f"{prometheus.log.read_text()[-2000:]}") from None
    return seen["last"]


def test_prometheus_reads_what_lclient_lists(cluster, prometheus_for):
    name = f"met-{uuid.uuid4().hex[:6]}"
    node = cluster.daemon(name, extra=["--capacity", "4", "--memory", "1G", "--max-log-size", "64K"])
    prometheus = prometheus_for([f"127.0.0.1:{node.metrics_port}"])
    jobs = {
        "ok": add(node, "echo hello"),
        "fails": add(node, "echo oops >&2; exit 3"),
        "missing": add(node, "nosuchcmd"),
        "slow": add(node, "sleep 30", "-timeout", "1s"),
        "chatty": add(node, "head -c 100000 /dev/zero"),
    }
    for key, job in jobs.items():
        node.lclient("-wait", job, timeout=60)
    running = add(node, "sleep 600", "-mem", "64M")
    until(lambda: check(node, running)["state"] == "RUNNING", "the sleep to run")
    listed = list_json(node)
    states = Counter(job["state"] for job in listed)
    assert states == {"EXITED": 4, "TIMED_OUT": 1, "RUNNING": 1}, states
    assert {check(node, jobs[k])["exit_code"] for k in ("ok", "fails", "missing")} == {0, 3, 127}

    # the cluster's jobs by state, as the node's watch sees them, match -list
    settled(prometheus, 'sum by (state) (lclusterd_jobs{job="lclusterd"}) > 0', dict(states), "state")
    settled(prometheus, "lclusterd_queue_depth", {"": 0})
    # what this node did: one count per job, ends by final state
    settled(prometheus, "lclusterd_jobs_submitted_total", {"": 6})
    settled(prometheus, "lclusterd_jobs_started_total", {"": 6})
    ended = {s: float(n) for s, n in states.items() if s != "RUNNING"}
    settled(prometheus, "lclusterd_jobs_ended_total > 0", ended, "state")
    for histogram in ("lclusterd_submit_latency_seconds", "lclusterd_queue_wait_seconds",
                      "lclusterd_spawn_latency_seconds"):
        settled(prometheus, f"{histogram}_count", {"": 6})
    settled(prometheus, "lclusterd_job_run_seconds_count", {"": 5})  # the sleep has not ended
    # the timed-out job ran about its timeout: its run time falls in the (0.5, 5] buckets
    slow = prometheus.values('sum(lclusterd_job_run_seconds_bucket{le="5.0"}) - sum(lclusterd_job_run_seconds_bucket{le="0.5"})')
    assert slow == {"": 1.0}, slow
    # the node's load and role
    node_label = f'{{node="{name}"}}'
    assert settled(prometheus, f"lclusterd_node_running_jobs{node_label}", {"": 1})
    assert settled(prometheus, f"lclusterd_node_capacity_jobs{node_label}", {"": 4})
    assert settled(prometheus, f"lclusterd_node_memory_offered_bytes{node_label}", {"": float(1 << 30)})
    assert settled(prometheus, f"lclusterd_node_memory_free_bytes{node_label}", {"": float((1 << 30) - (64 << 20))})
    assert settled(prometheus, "lclusterd_node_is_prime == 1", {name: 1.0}, "node")
    # lclient -nodes says the same in human units
    header, row = node.lclient("-nodes").stdout.splitlines()
    assert header.split()[-4:] == ["MEMORY", "(USED", "/", "OFFERED)"] and row.split()[-3:] == ["64M", "/", "1G"], row
    # output: "hello\n" and the chatty one's first 64 KiB on stdout, the rest cut; stderr what -logs shows
    stderr = sum(len(node.lclient("-logs", job).stderr.encode()) for job in jobs.values())
    assert stderr > len("oops\n")  # the shell's line about nosuchcmd too
    settled(prometheus, "lclusterd_log_written_bytes_total", {"stdout": 6 + 65536, "stderr": stderr}, "stream")
    settled(prometheus, "lclusterd_log_cut_bytes_total", {"stdout": 100000 - 65536, "stderr": 0}, "stream")
    # etcd: every write transaction committed
    assert prometheus.values("lclusterd_etcd_transactions_total", "result")["committed"] > 0
    assert prometheus.values('lclusterd_etcd_transactions_total{result="error"}') == {"": 0}
    assert prometheus.values("lclusterd_etcd_transaction_seconds_count")[""] > 0


def test_a_record_that_does_not_decode_is_skipped_and_counted(cluster, prometheus_for):
    node = cluster.daemon(f"met-{uuid.uuid4().hex[:6]}")
    prometheus = prometheus_for([f"127.0.0.1:{node.metrics_port}"])
    settled(prometheus, 'lclusterd_records_skipped_total{kind="job"}', {"": 0})
    bad = f"{cluster.prefix}/jobs/{uuid.uuid4().hex}"
    assert etcdctl(cluster.etcd.endpoint, "put", bad, "{not json").returncode == 0
    try:
        settled(prometheus, 'lclusterd_records_skipped_total{kind="job"}', {"": 1})
        assert prometheus.values("sum(lclusterd_jobs)") == {"": 0}
    finally:
        etcdctl(cluster.etcd.endpoint, "del", bad)


def test_metrics_are_off_with_an_empty_address_and_a_taken_port_stops_the_start(cluster):
    off = cluster.daemon(f"met-{uuid.uuid4().hex[:6]}", extra=["--metrics-listen", ""])
    assert "metrics on" not in off.log()
    taken = cluster.daemons[0].port  # its gRPC port
    second = cluster.daemon(f"met-{uuid.uuid4().hex[:6]}", extra=["--metrics-listen", f"127.0.0.1:{taken}"],
                            start=False)
    result = subprocess.run(second.argv(), capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("LCLUSTERD_")})
    assert result.returncode == 3, result.stderr
    assert f"lclusterd: ERROR cannot serve metrics on 127.0.0.1:{taken}: Address already in use" in result.stderr


def test_a_scrape_is_prometheus_text_without_job_ids(cluster):
    node = cluster.daemon(f"met-{uuid.uuid4().hex[:6]}")
    job = add(node, "true", "-wait")
    until(lambda: "lclusterd_jobs_ended_total{state=\"EXITED\"} 1.0" in scrape(node), "the end to be counted")
    text = scrape(node)
    assert job not in text  # counts and times only: no job id, command or owner
    assert "# TYPE lclusterd_submit_latency_seconds histogram" in text
    assert "# TYPE lclusterd_jobs_submitted_total counter" in text
    assert "process_resident_memory_bytes" in text
    # the default --memory (the host's less 10 %) is no whole number of G: -nodes shows it to a tenth
    row = node.lclient("-nodes").stdout.splitlines()[1]
    assert re.search(r" 0B / \d+(\.\d)?[GT]$", row), row


def scrape(node) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=5) as response:
        return response.read().decode()
