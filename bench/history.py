"""History at scale: lclient against a node whose etcd holds 100,000 ended jobs. One command,
prints a table. Run as root after `make prep`:

    .venv/bin/python bench/history.py [--jobs 100000] [--runs 20]

The history is written as the daemon writes a job's end: each record (an EXITED JobRecord of
the model, encoded by it) at jobs/<uuid> with its retention index key ended/<ms>/<uuid>, in
transactions of 64 jobs (etcd's 128 operations) straight into etcd through the daemon's own
Store (not 100,000 processes: what is measured is reading a large history, not making it).
The node starts on a small history first (a few real jobs) for the baseline, is stopped
while the history is written, and starts again on it: `lclient -list -limit 20` and
`lclient -check UUID` (whole processes, the launcher on PATH, over the node's Unix socket),
round-robin with `python3 -c pass`; the daemon's VmRSS and VmHWM (/proc/PID/status) after
the calls; etcd's database size (etcdctl endpoint status) before and after, per 1,000 jobs.
Targets (issue 13): -list -limit 20 p50 <= 100 ms, -check unaffected, daemon RSS < 150 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tools"))

from support.host import remove_cgroup_parent  # noqa: E402  (the tests' process helpers)
from support.processes import EtcdProcess, NodeProcess  # noqa: E402

from bench.client import pct, round_robin  # noqa: E402
from launcher import write_launcher  # noqa: E402
from lclusterd.cluster import decode  # noqa: E402
from lclusterd.cluster.keys import Keys  # noqa: E402
from lclusterd.cluster.kv import Put  # noqa: E402
from lclusterd.cluster.store import Store  # noqa: E402
from lclusterd.errors import StoreUnavailable  # noqa: E402
from lclusterd.model import JobRecord, JobSpec  # noqa: E402
from lclusterd.states import EXITED  # noqa: E402

STATE_PARENT = Path("/var/lib/lclusterd")
PREFIX = "/bench-history"
NODE = "history"
BATCH = 64  # jobs per transaction: a record and its index key each, etcd's 128 operations


def ended_record(i: int, now: float) -> JobRecord:
    """The i-th of the history: a short job that ended in the last day (well inside --keep)."""
    created = now - 86400 + i * 0.5
    return JobRecord(id=uuid.uuid4().hex, spec=JobSpec(command=f"echo history {i}; sleep 0"), state=EXITED,
                     node=NODE, created_at=created, assigned_at=created + 0.002, started_at=created + 0.004,
                     finished_at=created + 0.03, exit_code=0, host_pid=10000 + i % 50000,
                     peak_memory_bytes=262144, cpu_seconds=0.002, owner="root")


def fill(endpoint: str, jobs: int) -> tuple[float, str]:
    """Write `jobs` ended records; seconds taken and one of the ids (for -check)."""
    store, keys, now = Store(endpoint, timeout=30), Keys(PREFIX), time.time()
    started, some_id = time.perf_counter(), ""
    try:
        for start in range(0, jobs, BATCH):
            ops = []
            for i in range(start, min(jobs, start + BATCH)):
                record = ended_record(i, now)
                ops += [Put(keys.job(record.id), record.to_bytes()), Put(keys.ended(record.finished_at, record.id), b"")]
                some_id = some_id or record.id
            if not store.txn([], ops).succeeded:
                raise RuntimeError("a history transaction failed")
    finally:
        store.close()
    return time.perf_counter() - started, some_id


def full_read(endpoint: str) -> str:
    """What -list -limit N cost the node before it read from the newest end: the whole jobs/
    prefix read and decoded (timed here, in this process, against the same etcd)."""
    store, keys = Store(endpoint, timeout=60), Keys(PREFIX)
    started = time.perf_counter()
    try:
        kvs, _ = store.get_prefix(keys.jobs_prefix)
        records = decode.jobs_of(sorted(kvs, key=lambda kv: kv.create_revision))
        return f"{(time.perf_counter() - started) * 1000:.0f} ms for {len(records)} records"
    except StoreUnavailable as exc:
        return f"fails after {time.perf_counter() - started:.1f} s: {str(exc)[:60]}"
    finally:
        store.close()


def etcd_reads(endpoint: str, runs: int = 10) -> str:
    """Where a -list -limit 20 goes: etcd's answer for the newest 256 records by creation
    revision (etcd sorts the whole prefix for it) against 256 records in key order (no sort)."""
    store, keys = Store(endpoint, timeout=60), Keys(PREFIX)
    prefix = keys.jobs_prefix
    try:
        sorted_ms, plain_ms = [], []
        for _ in range(runs):
            started = time.perf_counter()
            store.get_newest(prefix, 256)
            sorted_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            store.get_range(prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1), 256)
            plain_ms.append((time.perf_counter() - started) * 1000)
        return f"newest 256 by creation {statistics.median(sorted_ms):.0f} ms, 256 by key {statistics.median(plain_ms):.0f} ms"
    finally:
        store.close()


def db_size(etcd: EtcdProcess) -> tuple[int, int]:
    """etcd's database file size and the part of it in use (bytes)."""
    out = subprocess.run(["etcdctl", "--endpoints", etcd.endpoint, "endpoint", "status", "-w", "json"],
                         capture_output=True, text=True, check=True, env={**os.environ, "ETCDCTL_API": "3"}).stdout
    status = json.loads(out)[0]["Status"]
    return int(status["dbSize"]), int(status.get("dbSizeInUse", status["dbSize"]))


def memory_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure(node: NodeProcess, launcher: Path, job: str, runs: int) -> dict[str, list[tuple[float, float]]]:
    env = {**os.environ, "LCLUSTER_SERVER": node.socket}
    commands = {
        "python3 -c pass (Debian)": ["/usr/bin/python3", "-c", "pass"],
        "lclient -list -limit 20": [str(launcher), "-list", "-limit", "20"],
        "lclient -check UUID": [str(launcher), "-check", job],
    }
    return round_robin(commands, env, runs)


def start_node(work: Path, etcd: EtcdProcess) -> tuple[NodeProcess, float]:
    node = NodeProcess(work / "node", etcd.endpoint, PREFIX, NODE, ["--log-level", "warning", "--keep", "30d"])
    started = time.perf_counter()
    node.start()
    return node, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/history.py: run as root", file=sys.stderr)
        return 2
    STATE_PARENT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-history-", dir=STATE_PARENT))
    launcher = work / "lclient"
    write_launcher(launcher)
    etcd = EtcdProcess(work)
    etcd.start()
    node = None
    rows: list[tuple[str, str, str]] = []
    try:
        node, _ = start_node(work, etcd)
        env = {**os.environ, "LCLUSTER_SERVER": node.socket}
        few = [subprocess.run([str(launcher), "-add", "true", "-wait"], env=env, capture_output=True, text=True,
                              check=True).stdout.strip() for _ in range(20)]
        small = measure(node, launcher, few[0], args.runs)
        small_memory = memory_mb(node.process.pid)
        node.stop()
        before, _ = db_size(etcd)
        seconds, job = fill(etcd.endpoint, args.jobs)
        after, in_use = db_size(etcd)
        whole = full_read(etcd.endpoint)
        reads = etcd_reads(etcd.endpoint)
        node, start_seconds = start_node(work, etcd)
        large = measure(node, launcher, job, args.runs)
        large_memory = memory_mb(node.process.pid)
        for name, times in (("20 jobs", small), (f"{args.jobs} ended jobs", large)):
            base = statistics.median(w for w, _ in times["python3 -c pass (Debian)"])
            for command in ("lclient -list -limit 20", "lclient -check UUID"):
                wall = [w for w, _ in times[command]]
                target = "<= 100 (p50)" if "list" in command and name != "20 jobs" else "unaffected"
                rows.append((f"{command}, {name} (ms)", f"p50 {statistics.median(wall):.1f}  p90 {pct(wall, 90):.1f}  "
                             f"({statistics.median(wall) / base:.1f}x python3 -c pass {base:.1f})", target))
        rows += [
            ("daemon RSS / peak, 20 jobs (MB)", f"{small_memory[0]:.0f} / {small_memory[1]:.0f}", "-"),
            (f"daemon RSS / peak, {args.jobs} ended jobs (MB)", f"{large_memory[0]:.0f} / {large_memory[1]:.0f}", "< 150"),
            (f"node start on {args.jobs} ended jobs (s)", f"{start_seconds:.1f}", "-"),
            ("the whole jobs/ prefix read and decoded (the old -list -limit)", whole, "-"),
            ("etcd range reads of jobs/ (p50, from this process)", reads, "-"),
            ("etcd db size per 1,000 jobs (KB)", f"{(after - before) / args.jobs:.0f} (file {after / 2**20:.0f} MB, "
             f"in use {in_use / 2**20:.0f} MB)", "-"),
            (f"writing the history ({BATCH} jobs per txn)", f"{args.jobs / seconds:.0f} jobs/s", "-"),
        ]
    finally:
        if node is not None:
            node.stop()
            remove_cgroup_parent(NODE)
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"History at scale, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, {args.runs} rounds, Unix socket")
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<56}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
