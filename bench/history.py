"""History at scale: lclient against a node whose etcd holds 100,000 ended jobs. One command,
prints a table. Run as root after `make prep`:

    .venv/bin/python bench/history.py [--jobs 100000] [--runs 20] [--upgrade]

The history is written as the daemon writes a job's add and end: each record (an EXITED
JobRecord of the model, encoded by it) at jobs/<uuid> with its -list index key listed/... and
its retention index key ended/<ms>/<uuid>, in transactions of 42 jobs (etcd's 128 operations)
straight into etcd through the daemon's own Store (not 100,000 processes: what is measured is
reading a large history, not making it). With --upgrade the history is written as a version
before the index wrote it (no listed/ keys, listed-complete removed), and the node's start
includes the prime's pass that indexes it (listindex.py). The node starts on a small history
first (a few real jobs) for the baseline, is stopped while the history is written, and starts
again on it: `lclient -list -limit 20`, `-list -limit 100` (which reaches into the history)
and `lclient -check UUID` (whole processes, the launcher on PATH, over the node's Unix
socket), round-robin with `python3 -c pass`; the List call alone from a warm client in this
process; the daemon's VmRSS and VmHWM (/proc/PID/status) after the calls; etcd's database size
(etcdctl endpoint status) before and after, per 1,000 jobs. A command that fails is reported
as failing, not timed. Targets (issue 13): -list -limit 20 p50 <= 100 ms, -check unaffected,
daemon RSS < 150 MB.
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

from bench.client import Times, pct, round_robin  # noqa: E402
from lclient.client import JobsClient  # noqa: E402
from launcher import write_launcher  # noqa: E402
from lclusterd.cluster import decode  # noqa: E402
from lclusterd.cluster.keys import Keys  # noqa: E402
from lclusterd.cluster.kv import Delete, Put  # noqa: E402
from lclusterd.cluster.listing import index_put, prefix_end  # noqa: E402
from lclusterd.cluster.store import Store  # noqa: E402
from lclusterd.errors import StoreUnavailable  # noqa: E402
from lclusterd.model import JobRecord, JobSpec  # noqa: E402
from lclusterd.states import EXITED  # noqa: E402

STATE_PARENT = Path("/var/lib/lclusterd")
PREFIX = "/bench-history"
NODE = "history"
BATCH = 42  # jobs per transaction: a record and its two index keys each, within etcd's 128 operations


def ended_record(i: int, now: float) -> JobRecord:
    """The i-th of the history: a short job that ended in the last day (well inside --keep)."""
    created = now - 86400 + i * 0.5
    return JobRecord(id=uuid.uuid4().hex, spec=JobSpec(command=f"echo history {i}; sleep 0"), state=EXITED,
                     node=NODE, created_at=created, assigned_at=created + 0.002, started_at=created + 0.004,
                     finished_at=created + 0.03, exit_code=0, host_pid=10000 + i % 50000,
                     peak_memory_bytes=262144, cpu_seconds=0.002, owner="root")


def fill(endpoint: str, jobs: int, upgrade: bool) -> tuple[float, str]:
    """Write `jobs` ended records (without listed/ keys, as before the index, if `upgrade`);
    seconds taken and one of the ids (for -check)."""
    store, keys, now = Store(endpoint, timeout=30), Keys(PREFIX), time.time()
    started, some_id = time.perf_counter(), ""
    try:
        if upgrade:
            store.txn([], [Delete(keys.listed_complete)])
        for start in range(0, jobs, BATCH):
            ops = []
            for i in range(start, min(jobs, start + BATCH)):
                record = ended_record(i, now)
                ops += [Put(keys.job(record.id), record.to_bytes()), Put(keys.ended(record.finished_at, record.id), b"")]
                ops += [] if upgrade else [index_put(keys, record)]
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
    """What a -list -limit 20 asks etcd, before and now: the newest 256 records of jobs/ by
    creation revision (etcd reads and sorts the whole prefix for it: the old way); 20 keys of
    listed/ over all of it (etcd 3.4 visits every key of a range to count it, limit or not);
    20 keys of listed/ in a window of the last hour (which holds the 20 real jobs: what the
    index's windows keep a read to)."""
    store, keys = Store(endpoint, timeout=60), Keys(PREFIX)
    jobs, listed = keys.jobs_prefix, keys.listed_prefix
    hour = keys.listed_newer_than(int((time.time() - 3600) * 1e6))
    reads = {"newest 256 by creation": lambda: sorted_newest(store, jobs, 256),
             "20 of listed/": lambda: store.get_range(listed, prefix_end(listed), 20),
             "20 of listed/, last hour": lambda: store.get_range(listed, hour, 20)}
    try:
        times: dict[str, list[float]] = {name: [] for name in reads}
        for _ in range(runs):
            for name, read in reads.items():
                started = time.perf_counter()
                read()
                times[name].append((time.perf_counter() - started) * 1000)
        return ", ".join(f"{name} {statistics.median(ms):.1f} ms" for name, ms in times.items())
    finally:
        store.close()


def sorted_newest(store: Store, prefix: str, limit: int) -> None:
    """The old -list -limit's read: a range sorted by creation revision, newest first."""
    import etcd3.etcdrpc as etcdrpc  # (only the store imports etcd3 in lclusterd; this is its old request)
    key = prefix.encode()
    request = etcdrpc.RangeRequest(key=key, range_end=prefix_end(prefix).encode(), limit=limit,
                                   sort_order=etcdrpc.RangeRequest.DESCEND, sort_target=etcdrpc.RangeRequest.CREATE)
    store._client.kvstub.Range(request, store.timeout)


def db_size(etcd: EtcdProcess) -> tuple[int, int]:
    """etcd's database file size and the part of it in use (bytes), once etcd's backend has
    committed what it was sent (it commits every 100 ms or 10,000 writes: read at once after a
    fill, the size missed up to that many writes, ±0.1 MB per 1,000 jobs between runs)."""
    time.sleep(1)
    out = subprocess.run(["etcdctl", "--endpoints", etcd.endpoint, "endpoint", "status", "-w", "json"],
                         capture_output=True, text=True, check=True, env={**os.environ, "ETCDCTL_API": "3"}).stdout
    status = json.loads(out)[0]["Status"]
    return int(status["dbSize"]), int(status.get("dbSizeInUse", status["dbSize"]))


def memory_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


COMMANDS = {"lclient -list -limit 20": ["-list", "-limit", "20"], "lclient -list -limit 100": ["-list", "-limit", "100"],
            "lclient -check UUID": ["-check"]}


def measure(node: NodeProcess, launcher: Path, job: str, runs: int) -> tuple[Times, dict[str, str]]:
    """Each command's times, round-robin with python3 -c pass; a command that fails is tried once
    and its failure reported instead (exit status and the first line it wrote)."""
    env = {**os.environ, "LCLUSTER_SERVER": node.socket}
    commands, failures = {"python3 -c pass (Debian)": ["/usr/bin/python3", "-c", "pass"]}, {}
    for name, args in COMMANDS.items():
        argv = [str(launcher), *args, *([job] if args == ["-check"] else [])]
        tried = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if tried.returncode == 0:
            commands[name] = argv
        else:
            failures[name] = f"fails: exit {tried.returncode}, {tried.stderr.strip()[:90]}"
    return round_robin(commands, env, runs), failures


def list_call(node: NodeProcess, runs: int) -> str:
    """The List call alone, from a client in this process with its channel open (the server's
    part of -list -limit N, without lclient's start)."""
    with JobsClient(node.socket) as client:
        times = {}
        for limit in (20, 100):
            client.list([], limit)  # warm
            times[limit] = []
            for _ in range(runs):
                started = time.perf_counter()
                client.list([], limit)
                times[limit].append((time.perf_counter() - started) * 1000)
    return ", ".join(f"limit {limit}: p50 {statistics.median(ms):.1f} ms" for limit, ms in times.items())


def indexed_after(etcd: EtcdProcess, started: float, timeout: float = 600) -> float:
    """Seconds from `started` (perf_counter) until listed-complete is in etcd: the prime's first
    pass over a history written without the index (--upgrade)."""
    store = Store(etcd.endpoint, timeout=30)
    try:
        while store.get(Keys(PREFIX).listed_complete) is None:
            if time.perf_counter() - started > timeout:
                raise RuntimeError("the history was not indexed")
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        store.close()


def start_node(work: Path, etcd: EtcdProcess) -> tuple[NodeProcess, float, float]:
    """The node started on the history: it, the seconds until it served and the perf_counter
    value it was started at."""
    node = NodeProcess(work / "node", etcd.endpoint, PREFIX, NODE, ["--log-level", "warning", "--keep", "30d"])
    started = time.perf_counter()
    node.start()
    return node, time.perf_counter() - started, started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--upgrade", action="store_true", help="write the history without -list's index, as an older "
                        "version did, and time the prime's pass that indexes it")
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
        node, _, _ = start_node(work, etcd)
        env = {**os.environ, "LCLUSTER_SERVER": node.socket}
        few = [subprocess.run([str(launcher), "-add", "true", "-wait"], env=env, capture_output=True, text=True,
                              check=True).stdout.strip() for _ in range(20)]
        small, small_failed = measure(node, launcher, few[0], args.runs)
        small_call, small_memory = list_call(node, args.runs), memory_mb(node.process.pid)
        node.stop()
        before, _ = db_size(etcd)
        seconds, job = fill(etcd.endpoint, args.jobs, args.upgrade)
        after, in_use = db_size(etcd)
        whole = full_read(etcd.endpoint)
        reads = etcd_reads(etcd.endpoint)
        node, start_seconds, started = start_node(work, etcd)
        indexed = indexed_after(etcd, started) if args.upgrade else None
        large, large_failed = measure(node, launcher, job, args.runs)
        large_call, large_memory = list_call(node, args.runs), memory_mb(node.process.pid)
        rows += command_rows("20 jobs", small, small_failed) + command_rows(f"{args.jobs} ended jobs", large, large_failed)
        rows += [
            ("List call alone, 20 jobs (from a warm client)", small_call, "-"),
            (f"List call alone, {args.jobs} ended jobs", large_call, "-"),
            ("daemon RSS / peak, 20 jobs (MB)", f"{small_memory[0]:.0f} / {small_memory[1]:.0f}", "-"),
            (f"daemon RSS / peak, {args.jobs} ended jobs (MB)", f"{large_memory[0]:.0f} / {large_memory[1]:.0f}", "< 150"),
            (f"node start on {args.jobs} ended jobs (s)", f"{start_seconds:.1f}", "-"),
        ]
        if indexed is not None:
            rows.append((f"the prime's index pass over {args.jobs} unindexed jobs, from the start (s)", f"{indexed:.1f}", "-"))
        rows += [
            ("the whole jobs/ prefix read and decoded (-list without -limit)", whole, "-"),
            ("etcd range reads (p50, from this process)", reads, "-"),
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
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, {args.runs} rounds, Unix socket"
          + (", history written without the index (--upgrade)" if args.upgrade else ""))
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<56}  {target}")
    return 0


def command_rows(name: str, times: Times, failures: dict[str, str]) -> list[tuple[str, str, str]]:
    base = statistics.median(w for w, _ in times["python3 -c pass (Debian)"])
    rows = []
    for command in COMMANDS:
        target = "<= 100 (p50)" if command.endswith("-limit 20") and name != "20 jobs" else "-" if "100" in command else "unaffected"
        if command in failures:
            rows.append((f"{command}, {name} (ms)", failures[command], target))
            continue
        wall = [w for w, _ in times[command]]
        rows.append((f"{command}, {name} (ms)", f"p50 {statistics.median(wall):.1f}  p90 {pct(wall, 90):.1f}  "
                     f"({statistics.median(wall) / base:.1f}x python3 -c pass {base:.1f})", target))
    return rows


if __name__ == "__main__":
    sys.exit(main())
