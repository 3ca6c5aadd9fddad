"""Control-plane benchmark: one command, prints a table. Run as root after `make prep`:

    .venv/bin/python bench/cluster.py [--jobs 500] [--rss-jobs 500] [--etcd-tls]

(a) submit latency: Add RPC until the job is durably queued in etcd (p50/p99), one job at a
    time on an idle node, and back to back (then the earlier jobs run on the same 2 cores);
    (a) and (c) for each way in: the node's Unix socket (through its uid-checking gate), TCP
    with mutual TLS, and plain TCP (--insecure, a second node: as before identities)
(b) add -> running: the job's started_at minus created_at (both stamped by the daemon)
(c) end-to-end throughput of N `true` jobs on one node (jobs/s, makespan), and etcd write
    transactions per job (from etcd's revision counter: each write txn adds one); measured
    --rounds times (default 3) on the same node, the median shown with the range; and the CPU
    per job of each process in those rounds (bench/cpu.py: daemon, fork server, the jobs' own
    processes, etcd, this benchmark's client), steadier than throughput for comparing code
(d) daemon RSS with N concurrently running `sleep` jobs (plus the runtime helper's)
(e) an array of --array-members `true` members end to end on the plain TCP node (members/s),
    beside `sbatch --array` when Slurm is installed (bench/arrays.py has the rest)
Slurm (c) is measured in the same run when `make bench-deps` has installed it: N x
`sbatch --oversubscribe --wrap true` on a throwaway one-node Slurm (bench/slurm.py, its best
queue setting batch_sched_delay=0), first submit -> queue empty; else skipped.
`--only-slurm` measures just that (no etcd, no lclusterd). `--etcd-tls` runs etcd as the
embedded etcd runs: TLS only, each node presenting a client certificate (made with certs.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from support.host import remove_cgroup_parent  # noqa: E402  (the tests' process helpers)
from support.etcd_pki import Pki  # noqa: E402
from support.processes import EtcdProcess, NodeProcess  # noqa: E402
from support.tls import make_pki  # noqa: E402

from bench.arrays import array_rows, print_rows  # noqa: E402
from bench.cpu import CpuMeter, per_job  # noqa: E402
from bench.slurm import SlurmError, one_node_slurm  # noqa: E402
from lclient.client import JobsClient, Target  # noqa: E402
from lclusterd.cluster.store import Store, StoreTls  # noqa: E402
from lclusterd.rpc import lclusterd_pb2 as pb  # noqa: E402


STATE_PARENT = Path("/var/lib/lclusterd")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def submit_latency(client: JobsClient, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        client.add(pb.JobSpec(command="true"))
        times.append((time.perf_counter() - t) * 1000)
    return times


def add_to_running(client: JobsClient, n: int) -> tuple[list[float], list[float]]:
    """One job at a time (each waited for before the next): submit latency on an idle node,
    and the add -> running delay."""
    submits, delays = [], []
    for _ in range(n):
        t = time.perf_counter()
        job_id = client.add(pb.JobSpec(command="true")).id
        submits.append((time.perf_counter() - t) * 1000)
        job = client.wait(job_id, 60)
        delays.append((job.started_at - job.created_at) * 1000)
    return submits, delays


def throughput(client: JobsClient, store: Store, n: int) -> tuple[float, float, float]:
    before = store.revision()
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: client.add(pb.JobSpec(command="true")).id, range(n)))
        states = list(pool.map(lambda job: client.wait(job, 300).state, ids))
    makespan = time.perf_counter() - start
    txns = (store.revision() - before) / n
    assert states.count("EXITED") == n, {s: states.count(s) for s in set(states)}
    return n / makespan, makespan, txns


def rss_with_running(client: JobsClient, daemon: NodeProcess, n: int) -> tuple[float, float, int]:
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: client.add(pb.JobSpec(command="sleep 120")).id, range(n)))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = len(client.list(["RUNNING"]))
        if running >= n:
            break
        time.sleep(0.5)
    time.sleep(1)
    helper = [p for p in children(daemon.process.pid) if b"forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()]
    daemon_rss = rss_mb(daemon.process.pid)
    helper_rss = sum(rss_mb(p) for p in helper)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client.kill, ids))
    return daemon_rss, helper_rss, running


def transport_rows(way: str, client: JobsClient, store: Store, args,
                   meter: CpuMeter) -> tuple[list[tuple[str, str, str]], list[float]]:
    """Submit latency (idle, back to back) and throughput through `client`'s way in, with the
    CPU each process spent per job in the throughput rounds; and the add -> running delays of
    the idle submits."""
    client.wait(client.add(pb.JobSpec(command="true")).id, 60)  # warm up
    idle, running = add_to_running(client, args.latency_runs)
    submit = submit_latency(client, args.latency_runs)
    time.sleep(1)
    before = meter.read()
    rounds = sorted(throughput(client, store, args.jobs) for _ in range(max(1, args.rounds)))
    cpu = per_job(before, meter.read(), args.jobs * len(rounds))
    rate, makespan, txns = rounds[len(rounds) // 2]
    return [
        (f"{way}: submit p50 / p99 (ms)", f"{pct(idle, 50):.2f} / {pct(idle, 99):.2f}", "<= 5 (p50)"),
        ("  back to back, jobs running (ms)", f"{pct(submit, 50):.2f} / {pct(submit, 99):.2f}", "-"),
        (f"  throughput, {args.jobs} x true (jobs/s)",
         f"{rate:.0f} (makespan {makespan:.2f}s; {len(rounds)} rounds {rounds[0][0]:.0f}-{rounds[-1][0]:.0f})", ">= 300"),
        ("  CPU per job in those rounds (ms)", cpu, "-"),
        ("  etcd write txns per job", f"{txns:.2f}", "<= 4"),
    ], running


def slurm_throughput(n: int, timeout: float = 300) -> tuple[float, float, str, float] | None:
    """n x `sbatch --oversubscribe --wrap true` on a one-node Slurm started for this (bench/slurm.py),
    first submit -> queue empty: (jobs/s, makespan, its scheduler setting, seconds spent in the n
    sbatch calls); None if Slurm is not installed. Raises SlurmError unless every job completed."""
    with one_node_slurm() as slurm:
        if slurm is None:
            return None
        start = time.perf_counter()
        for _ in range(n):
            slurm.run("sbatch", "--parsable", "--oversubscribe", "--wrap", "true", "-o", "/dev/null")
        submitted = time.perf_counter() - start
        deadline = time.monotonic() + timeout
        while left := slurm.queued():
            if time.monotonic() > deadline:
                raise SlurmError(f"{len(left)} of {n} Slurm jobs still queued after {timeout:.0f}s\n"
                                 f"{slurm.run('sinfo', '-R', check=False)}{slurm.log_tails()}")
            time.sleep(0.2)
        makespan = time.perf_counter() - start
        deadline = time.monotonic() + 10  # slurmctld writes the job completion log a little later
        while sum(slurm.completed().values()) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        states, errors = slurm.completed(), slurm.step_errors()
        if states.get("COMPLETED", 0) != n or errors:
            raise SlurmError(f"Slurm jobs: {states} of {n}; {len(errors)} step errors\n" + "\n".join(errors[:10]))
        return n / makespan, makespan, slurm.setting, submitted


def slurm_row(n: int, slurm: tuple[float, float, str, float] | None | str) -> tuple[str, str, str]:
    if isinstance(slurm, tuple):
        return (f"Slurm throughput, {n} x sbatch, {slurm[2]} (jobs/s)",
                f"{slurm[0]:.0f} (makespan {slurm[1]:.2f}s, sbatch calls {slurm[3]:.2f}s)", "-")
    return ("Slurm throughput (jobs/s)", slurm or "skipped (not installed)", "-")


def measure_slurm(n: int) -> tuple[float, float, str, float] | None | str:
    """slurm_throughput, or a short failure note for the table (details on stderr)."""
    try:
        return slurm_throughput(n)
    except (SlurmError, OSError) as e:
        print(f"bench/cluster.py: Slurm: {e}", file=sys.stderr)
        return "failed (see stderr)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--rss-jobs", type=int, default=500)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (median reported)")
    parser.add_argument("--only-slurm", action="store_true", help="measure only Slurm's throughput (--jobs)")
    parser.add_argument("--etcd-tls", action="store_true", help="etcd speaks only TLS with client certificates")
    parser.add_argument("--array-members", type=int, default=1000,
                        help="an array of N `true` end to end, beside sbatch --array (0: not measured)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/cluster.py: run as root", file=sys.stderr)
        return 2
    if args.only_slurm:
        slurm = measure_slurm(args.jobs)
        name, value, _ = slurm_row(args.jobs, slurm)
        print(f"Slurm, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, {args.jobs} x sbatch --wrap true")
        print(f"{name}  {value}")
        return 0 if isinstance(slurm, tuple) else 1
    # The node's state (its job logs) lives where a real node keeps it, under /var/lib/lclusterd,
    # not in /tmp: this VM's root ext4 has no journal, and then ext4 skips inodes deleted in the
    # last ~35 s when it allocates one, scanning inode tables; in a /tmp that test runs have just
    # churned, creating a job's two log files cost 0.34 ms each instead of 0.01 ms.
    STATE_PARENT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=STATE_PARENT))
    etcd = EtcdProcess(work, pki=Pki.make(work / "etcd-pki", ["test"]) if args.etcd_tls else None)
    etcd.start()
    tls = etcd.client_tls
    capacity = [*(tls.lclusterd_args() if tls else []), "--capacity", str(max(args.rss_jobs + 50, 256)),
                "--log-level", "warning"]
    pki = make_pki(work / "pki", nodes={"bench": ["127.0.0.1"]}, users={"bench-admin": True})
    daemon = NodeProcess(work / "node", etcd.endpoint, "/bench", "bench",
                         [*capacity, "--tls-dir", str(pki), "--namespace", "127.0.0.1"])
    plain = NodeProcess(work / "plain", etcd.endpoint, "/bench-plain", "bench-plain", capacity)
    store = Store(etcd.endpoint, tls=StoreTls.read(str(tls.cacert), str(tls.cert), str(tls.key)) if tls else None)
    rows = []
    try:
        daemon.start()
        ways = {"Unix socket": Target(daemon.socket), "mutual TLS": Target(daemon.server, str(pki), "bench-admin")}
        delays = {}
        for way, target in ways.items():
            with JobsClient(target, timeout=60) as client:
                found, delays[way] = transport_rows(way, client, store, args, CpuMeter(daemon.process.pid, etcd.process.pid))
                rows += found
        running = delays["Unix socket"]
        with JobsClient(ways["Unix socket"], timeout=60) as client:
            daemon_rss, helper_rss, n_running = rss_with_running(client, daemon, args.rss_jobs)
        daemon.stop()
        plain.start()
        with JobsClient(Target(plain.server), timeout=60) as client:
            rows += transport_rows("plain TCP", client, store, args, CpuMeter(plain.process.pid, etcd.process.pid))[0]
        if args.array_members:  # an array end to end on the same node, beside sbatch --array
            with JobsClient(Target(plain.server), timeout=120) as client:
                rows += array_rows(client, store, args.array_members)
        rows += [
            ("add -> running p50 / p99 (ms)", f"{pct(running, 50):.2f} / {pct(running, 99):.2f}", "<= 15 (p50)"),
            (f"daemon RSS, {n_running} running sleep (MB)", f"{daemon_rss:.0f} (+ runtime helper {helper_rss:.0f})", "<= 150"),
        ]
        slurm = measure_slurm(args.jobs)
        rows.append(slurm_row(args.jobs, slurm))
        if isinstance(slurm, tuple):
            rate = float(rows[2][1].split()[0])  # the Unix socket's throughput
            rows.append(("lclusterd (Unix socket) / Slurm throughput", f"{rate / slurm[0]:.1f}x", "-"))
    finally:
        store.close()
        for node in (daemon, plain):
            node.stop()
            remove_cgroup_parent(node.name)
        etcd.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"lclusterd control plane, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, submit-latency runs {args.latency_runs}, etcd "
          f"{'TLS with client certificates' if args.etcd_tls else 'plain http'}")
    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
