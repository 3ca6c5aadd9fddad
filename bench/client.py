"""lclient's whole-process time: one command, prints a table. Run as root after `make prep`:

    .venv/bin/python bench/client.py [--runs 40] [--jobs 200] [--shells 8]

Each row is a whole process, started and waited for by this script (fork, exec, interpreter
start, imports, the call, exit), its median and p90 over --runs, and the ratio of the median
to Debian's `/usr/bin/python3 -c pass` measured in the same rounds: the commands are run
round-robin, so a burst of load on the machine falls on every row alike. lclient runs
against a node this script starts (its own etcd, state dir and prefix) over the node's Unix
socket, in two install modes: the launcher `make prep` puts on PATH (tools/launcher.py:
python -I -S, a fixed sys.path) and the venv's console script (the editable install, with
site and its .pth finder). Then --jobs `lclient -add true` from --shells parallel shells
(first start to last exit: submissions per second). With Slurm installed (`make bench-deps`),
`sbatch --wrap true`, `squeue` and the parallel sbatch run on a throwaway one-node Slurm
(bench/slurm.py) in the same way; else those rows are skipped.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tools"))

from support.host import remove_cgroup_parent  # noqa: E402  (the tests' process helpers)
from support.processes import EtcdProcess, NodeProcess  # noqa: E402

from bench.slurm import SlurmError, one_node_slurm  # noqa: E402
from launcher import write_launcher  # noqa: E402

STATE_PARENT = Path("/var/lib/lclusterd")  # as bench/cluster.py: a real node's disk, not /tmp
VENV_BIN = Path(sys.executable).parent
TARGET_RATIO = 6.0  # issue 13: -check and -add at most 6x python3 -c pass


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) milliseconds of one run, spawn to exit; a failed command
    stops the benchmark (its row would lie)."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = (time.perf_counter() - start) * 1000
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {process.returncode}")
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1000


Times = dict[str, list[tuple[float, float]]]


def round_robin(commands: dict[str, list[str]], env: dict[str, str], runs: int) -> Times:
    """Each command once per round, `runs` rounds (after one warm-up round for the page cache)."""
    times: Times = {name: [] for name in commands}
    for round_ in range(runs + 1):
        for name, argv in commands.items():
            measured = timed(argv, env)
            if round_:
                times[name].append(measured)
    return times


def parallel_rate(command: str, jobs: int, shells: int, env: dict[str, str]) -> float:
    """`command` `jobs` times in all, from `shells` shells at once: runs per second, first start to last exit."""
    per_shell = [jobs // shells + (1 if i < jobs % shells else 0) for i in range(shells)]
    start = time.perf_counter()
    procs = [subprocess.Popen(["sh", "-c", f"i=0; while [ $i -lt {n} ]; do {command} >/dev/null || exit 1; i=$((i+1)); done"],
                              env=env, stdin=subprocess.DEVNULL) for n in per_shell]
    failed = [p.wait() for p in procs]
    elapsed = time.perf_counter() - start
    if any(failed):
        raise RuntimeError(f"a shell running {command!r} failed")
    return jobs / elapsed


def lclient_rows(work: Path, args: argparse.Namespace) -> tuple[Times, dict[str, float]]:
    etcd = EtcdProcess(work)
    etcd.start()
    node = NodeProcess(work / "node", etcd.endpoint, "/bench-client", "bench-client",
                       ["--log-level", "warning", "--capacity", "64"])
    launcher = work / "lclient"
    write_launcher(launcher)
    console = str(VENV_BIN / "lclient")
    try:
        node.start()
        env = {**os.environ, "LCLUSTER_SERVER": node.socket}
        job = subprocess.run([str(launcher), "-add", "true", "-wait"], env=env, capture_output=True, text=True,
                             check=True).stdout.strip()
        commands = {
            "python3 -c pass (Debian)": ["/usr/bin/python3", "-c", "pass"],
            "venv python -c pass": [str(VENV_BIN / "python"), "-c", "pass"],
            "lclient -h (launcher)": [str(launcher), "-h"],
            "lclient -check UUID (launcher)": [str(launcher), "-check", job],
            "lclient -add true (launcher)": [str(launcher), "-add", "true"],
            "lclient -check UUID (console script)": [console, "-check", job],
            "lclient -add true (console script)": [console, "-add", "true"],
        }
        times = round_robin(commands, env, args.runs)
        rates = {
            f"{args.jobs} x lclient -add from {args.shells} shells (launcher)":
                parallel_rate(str(launcher) + " -add true", args.jobs, args.shells, env),
            f"{args.jobs} x lclient -add from {args.shells} shells (console script)":
                parallel_rate(console + " -add true", args.jobs, args.shells, env),
        }
        return times, rates
    finally:
        node.stop()
        remove_cgroup_parent(node.name)
        etcd.stop()


def slurm_rows(args: argparse.Namespace) -> tuple[Times, dict[str, float]] | str:
    try:
        with one_node_slurm(STATE_PARENT) as slurm:
            if slurm is None:
                return "not installed (make bench-deps)"
            commands = {
                "python3 -c pass (Debian)": ["/usr/bin/python3", "-c", "pass"],
                "sbatch --wrap true": ["sbatch", "--oversubscribe", "-o", "/dev/null", "--wrap", "true"],
                "squeue": ["squeue"],
            }
            times = round_robin(commands, slurm.env, args.runs)
            rate = parallel_rate("sbatch --oversubscribe -o /dev/null --wrap true", args.jobs, args.shells, slurm.env)
            return times, {f"{args.jobs} x sbatch from {args.shells} shells": rate}
    except (SlurmError, OSError, RuntimeError) as exc:
        print(f"bench/client.py: Slurm: {exc}", file=sys.stderr)
        return "failed (see stderr)"


def print_table(title: str, times: Times, rates: dict[str, float]) -> None:
    """Median and p90 of wall time, the median's ratio to python3 -c pass, and the median CPU
    time (user + system) with its ratio: on a busy machine wall time waits for the CPU, and
    the CPU ratio shows what the command itself costs."""
    base = statistics.median(w for w, _ in times["python3 -c pass (Debian)"])
    base_cpu = statistics.median(c for _, c in times["python3 -c pass (Debian)"])
    width = max(len(name) for name in [*times, *rates])
    print(title)
    print(f"{'command':<{width}}  {'median ms':>9}  {'p90 ms':>7}  {'x python3':>9}  {'CPU ms':>6}  {'x python3':>9}  target")
    for name, values in times.items():
        wall, cpu = [w for w, _ in values], [c for _, c in values]
        median, median_cpu = statistics.median(wall), statistics.median(cpu)
        target = f"<= {TARGET_RATIO:g}x" if ("-check" in name or "-add" in name) and "launcher" in name else ""
        print(f"{name:<{width}}  {median:9.1f}  {pct(wall, 90):7.1f}  {median / base:8.2f}x  {median_cpu:6.1f}  "
              f"{median_cpu / base_cpu:8.2f}x  {target}")
    for name, rate in rates.items():
        print(f"{name:<{width}}  {rate:9.1f} /s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40, help="rounds of each command (median and p90 over them)")
    parser.add_argument("--jobs", type=int, default=200, help="submissions in the parallel row")
    parser.add_argument("--shells", type=int, default=8, help="parallel shells in the parallel row")
    parser.add_argument("--no-slurm", action="store_true", help="skip Slurm even when installed")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/client.py: run as root", file=sys.stderr)
        return 2
    STATE_PARENT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-client-", dir=STATE_PARENT))
    try:
        times, rates = lclient_rows(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()[0]
    print_table(f"lclient start-up, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.node()}, "
                f"{os.cpu_count()} cores, load {load:.1f}, Python {platform.python_version()}, {args.runs} rounds, "
                "Unix socket", times, rates)
    slurm = "skipped (--no-slurm)" if args.no_slurm else slurm_rows(args)
    if isinstance(slurm, str):
        print(f"Slurm: {slurm}")
    else:
        print()
        print_table("Slurm, same run", *slurm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
