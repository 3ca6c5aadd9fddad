#!/usr/bin/env python3
"""Runtime benchmark: spawn-to-exit latency of /bin/true in full isolation, ours vs peers.

    .venv/bin/python bench/runtime.py [--runs 200] [--streams 2] [--only ours,runc,bwrap]
                                      [--rootfs /var/lib/lclusterd/rootfs] [--markdown]

In one run, side by side:
  ours            lclusterd.runtime.launcher.Launcher.run() as a node runs a job: its own user
                  namespace, device rules, a 1 GiB memory limit (the node's default), stdout
                  and stderr through capped log relays into files
  ours-no-userns  the same with --userns off
  ours-no-relay   the same with the job's output to /dev/null (no pipes, no relays)
  ours-bridge     the first with net="bridge": a veth on a bridge of the benchmark's own, an
                  address, a default route, /etc/hosts and /etc/resolv.conf
  ours-publish    the same with one published port (HOSTPORT:80, two nftables rules added and
                  removed per job, a held host port)
  runc            `runc run --bundle B <id>` (create + start + wait + delete), generated OCI bundle
  bwrap           `bwrap --unshare-all --ro-bind ROOTFS / --proc /proc --dev /dev /bin/true`
Each tool: a few warm-up runs (not counted), N sequential runs (p50/p90/p99 and runs/s),
then N runs on S parallel streams (threads, N/S each, back to back; runs/s). Ratios are
against runc's p50 from the same run: absolute times move between runs and machines.
Peers are skipped when not installed (`make bench-deps`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from bench import peers  # noqa: E402

DEFAULT_ROOTFS = "/var/lib/lclusterd/rootfs"
TOOLS = ("ours", "ours-no-userns", "ours-no-relay", "ours-bridge", "ours-publish", "runc", "bwrap")
JOB_MEMORY = 1 << 30  # what a node gives a job without -mem (lclusterd --default-mem)
LOG_CAP = 100 << 20  # lclusterd --max-log-size
CGROUP_PARENT = "lclusterd-bench"
BRIDGE, SUBNET = "lclbench0", "10.199.0.0/16"  # apart from a node's lcl0 and 10.88.0.0/16
PUBLISH_PORTS = range(21000, 21100)  # each run publishes the next, so parallel streams never share one


# --- machine description ------------------------------------------------------------------

def cgroup_mode() -> str:
    """'v2' (unified), 'hybrid' (v1 controllers + a cgroup2 mount) or 'v1'."""
    fstypes: dict[str, str] = {}
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    fstypes[parts[1]] = parts[2]
    except OSError:
        pass
    if fstypes.get("/sys/fs/cgroup") == "cgroup2":
        return "v2"
    if any(t == "cgroup2" for t in fstypes.values()):
        return "hybrid"
    if any(t == "cgroup" for t in fstypes.values()):
        return "v1"
    return "none"


def header_fields(rootfs: str) -> list[tuple[str, str]]:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [("date", now), ("kernel", platform.release()), ("cores", str(os.cpu_count())),
            ("cgroups", cgroup_mode()), ("rootfs", rootfs)]


# --- statistics ---------------------------------------------------------------------------

def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Result:
    tool: str
    label: str
    latencies: list[float] = field(default_factory=list)  # seconds, sequential runs
    seq_rate: float | None = None  # runs/s
    par_rate: float | None = None  # runs/s on `streams` streams
    par_p50: float | None = None
    memory: str = ""  # tool-side memory per job, as text
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies), q)


# --- the tools ----------------------------------------------------------------------------

class Tool:
    """One runner: setup(), run_once() (raises on failure), memory(), teardown()."""

    name = "?"
    label = "?"

    def setup(self) -> None: ...

    def run_once(self) -> None:
        raise NotImplementedError

    def memory(self) -> str:
        return ""

    def teardown(self) -> list[str]:
        """Release everything; return notes about anything left behind."""
        return []


class Ours(Tool):
    LABELS = {
        "ours": "lclusterd runtime as a node runs a job (user namespace, device rules, memory limit, log relays)",
        "ours-no-userns": "lclusterd runtime, --userns off (rest as above)",
        "ours-no-relay": "lclusterd runtime, output to /dev/null (no log relays; rest as the first row)",
        "ours-bridge": "lclusterd runtime, net=bridge (veth, address, route, /etc files; rest as the first row)",
        "ours-publish": "lclusterd runtime, net=bridge with one published port (nftables rules per job)",
    }

    def __init__(self, rootfs: str, tmp: str, variant: str = "ours"):
        self.name = variant
        self.rootfs = rootfs
        self.state_dir = os.path.join(tmp, variant)
        self.launcher = None
        self.label = self.LABELS[variant]
        self.userns = variant != "ours-no-userns"
        self.net = "bridge" if variant in ("ours-bridge", "ours-publish") else "none"
        self.publish = variant == "ours-publish"
        self._runs = 0
        self._lock = threading.Lock()
        # One pair of log files for every run: creating a job's files is the daemon's cost, not the runtime's.
        self.logs = None if variant == "ours-no-relay" else (os.path.join(tmp, f"{variant}.out"), os.path.join(tmp, f"{variant}.err"))

    def setup(self) -> None:
        from lclusterd.runtime import userns
        from lclusterd.runtime.launcher import Launcher, NetworkConfig
        from lclusterd.runtime.spec import RuntimeSpec

        self._spec = RuntimeSpec
        os.makedirs(self.state_dir, exist_ok=True)
        ranges = userns.subordinate_ranges() if self.userns else None
        if self.userns and ranges is None:
            raise RuntimeError(userns.MISSING_RANGES)
        network = NetworkConfig(BRIDGE, SUBNET) if self.net == "bridge" else None
        self.launcher = Launcher(state_dir=self.state_dir, cgroup_parent=f"{CGROUP_PARENT}-{self.name}", userns=ranges,
                                 network=network)
        self.launcher.start()

    def _job(self, argv: list[str]):
        out, err = self.logs or (None, None)
        publish = []
        if self.publish:
            with self._lock:
                self._runs += 1
                publish = [f"{PUBLISH_PORTS[self._runs % len(PUBLISH_PORTS)]}:80"]
        return self._spec(job_id=uuid.uuid4().hex, argv=argv, rootfs=self.rootfs, memory_bytes=JOB_MEMORY,
                          stdout_path=out, stderr_path=err, max_log_bytes=LOG_CAP if self.logs else None,
                          net=self.net, publish=publish)

    def run_once(self) -> None:
        result = self.launcher.run(self._job(["/bin/true"]))
        if getattr(result, "status", None) != "EXITED" or getattr(result, "exit_code", None) != 0:
            raise RuntimeError(f"launcher.run(/bin/true) returned {result!r}")

    def memory(self, jobs: int = 8) -> str:
        pid = getattr(self.launcher, "helper_pid", None)
        if not pid:
            return "helper pid not exposed"
        idle = peers.smaps_rollup(pid)
        if not idle:
            return f"helper {pid}: smaps_rollup unreadable"
        text = (f"fork-server helper PSS {fmt_bytes(idle['Pss'])} (RSS {fmt_bytes(idle['Rss'])}) idle, "
                "one for all jobs")
        # The same with `jobs` sleeping jobs: what one more running job costs on our side.
        ids = [uuid.uuid4().hex for _ in range(jobs)]
        try:
            for job_id in ids:
                job = self._job(["/bin/sleep", "5"])
                job.job_id = job_id
                self.launcher.submit(job)
            time.sleep(0.8)
            busy = peers.smaps_rollup(pid)
            # Python processes of ours under the helper besides the jobs: its spare job
            # inits (a fixed number waiting for the next jobs, not one per job).
            extra = [p for p in peers.process_tree(pid)[1:] if peers.comm(p).startswith(("python", "lclusterd"))]
            extra_pss = sum(peers.smaps_rollup(p).get("Pss", 0) for p in extra)
        finally:
            for job_id in ids:
                try:
                    self.launcher.kill(job_id, grace=0)
                except Exception:  # noqa: BLE001 - the wait below reports
                    pass
            for job_id in ids:
                self.launcher.wait(job_id, timeout=30)
        if busy:
            text += (f"; {fmt_bytes(busy['Pss'])} with {jobs} jobs running, plus {len(extra)} spare job inits "
                     f"waiting ({fmt_bytes(extra_pss)} PSS together; a fixed number, not one per job)")
        return text

    def teardown(self) -> list[str]:
        notes: list[str] = []
        if self.launcher is not None:
            pid = getattr(self.launcher, "helper_pid", None)
            try:
                self.launcher.close()
            except Exception as e:  # noqa: BLE001 - report, keep cleaning
                notes.append(f"ours: launcher.close() raised {e!r}")
            if pid and _alive(pid):
                time.sleep(0.5)
                if _alive(pid):
                    notes.append(f"ours: fork-server helper {pid} still running after close()")
        for d in _cgroup_dirs(f"{CGROUP_PARENT}-{self.name}"):
            try:
                os.rmdir(d)  # only succeeds when empty: never removes a job's cgroup
            except FileNotFoundError:
                pass
            except OSError:
                notes.append(f"ours: cgroup {d} not empty after close()")
        if os.path.isdir(self.state_dir):
            # Empty directories (state_dir/jobs) are the helper's layout, not leftovers.
            left = [p for p in _listdir_recursive(self.state_dir)
                    if not (os.path.isdir(os.path.join(self.state_dir, p))
                            and not os.listdir(os.path.join(self.state_dir, p)))]
            if left:
                notes.append(f"ours: state dir holds {len(left)} entries after close(): "
                             + ", ".join(left[:5]) + (" ..." if len(left) > 5 else ""))
        return notes


class Runc(Tool):
    name = "runc"

    def __init__(self, rootfs: str, tmp: str):
        self.rootfs = rootfs
        self.tmp = os.path.join(tmp, "runc")
        self.bundle = ""
        self.label = peers.tool_version("runc").replace(" version", "") + " (runc run)"
        self._n = 0
        self._lock = threading.Lock()
        self._prefix = f"lcbench-{os.getpid()}-"

    def setup(self) -> None:
        self.bundle = peers.make_runc_bundle(self.rootfs, self.tmp)

    def run_once(self) -> None:
        with self._lock:
            self._n += 1
            cid = f"{self._prefix}{self._n}"
        peers.run_runc_once(self.bundle, cid)

    def memory(self) -> str:
        mem = peers.runc_job_memory(self.rootfs, self.tmp)
        if not mem:
            return ""
        return (f"runc attached {fmt_bytes(mem['Pss'] // mem['jobs'])} PSS per running job "
                f"({mem['jobs']} jobs at once)")

    def teardown(self) -> list[str]:
        if not self.bundle:
            return []
        left = peers.cleanup_runc_state(self.bundle)
        return [f"runc: {len(left)} containers left in its state dir (force-deleted)"] if left else []


class Bwrap(Tool):
    name = "bwrap"

    def __init__(self, rootfs: str, tmp: str):
        self.rootfs = rootfs
        self.label = peers.tool_version("bwrap") + " (--unshare-all)"

    def run_once(self) -> None:
        peers.run_bwrap_once(self.rootfs)

    def memory(self) -> str:
        mem = peers.bwrap_job_memory(self.rootfs)
        if not mem:
            return ""
        return (f"bwrap {fmt_bytes(mem['Pss'] // mem['jobs'])} PSS per running job "
                f"({mem['procs'] // mem['jobs']} bwrap processes each, {mem['jobs']} jobs at once)")


def _alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (PID 1 here reaps late; count by state)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _cgroup_dirs(name: str) -> list[str]:
    out = []
    base = "/sys/fs/cgroup"
    if os.path.isdir(os.path.join(base, name)):
        out.append(os.path.join(base, name))
    try:
        for ctrl in os.listdir(base):
            d = os.path.join(base, ctrl, name)
            if os.path.isdir(d):
                out.append(d)
    except OSError:
        pass
    return out


def _listdir_recursive(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return out


def _count_cgroups() -> int:
    n = 0
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup/pids"):
        n += len(dirnames)
    return n


# --- measuring ----------------------------------------------------------------------------

def measure(tool: Tool, runs: int, streams: int, warmup: int, progress: Callable[[str], None]) -> Result:
    res = Result(tool.name, tool.label)
    try:
        progress(f"{tool.name}: setting up")
        tool.setup()
        for _ in range(warmup):
            tool.run_once()

        progress(f"{tool.name}: {runs} sequential runs")
        clock = time.perf_counter
        lat = res.latencies
        t_start = clock()
        for _ in range(runs):
            t0 = clock()
            tool.run_once()
            lat.append(clock() - t0)
        res.seq_rate = runs / (clock() - t_start)

        if streams > 1:
            progress(f"{tool.name}: {runs} runs on {streams} streams")
            per = [runs // streams + (1 if i < runs % streams else 0) for i in range(streams)]
            par_lat: list[list[float]] = [[] for _ in range(streams)]
            errors: list[BaseException] = []
            barrier = threading.Barrier(streams + 1)

            def stream(i: int) -> None:
                barrier.wait()
                try:
                    for _ in range(per[i]):
                        t0 = clock()
                        tool.run_once()
                        par_lat[i].append(clock() - t0)
                except BaseException as e:  # noqa: BLE001 - surfaced below
                    errors.append(e)

            threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(streams)]
            for t in threads:
                t.start()
            barrier.wait()
            t_start = clock()
            for t in threads:
                t.join()
            wall = clock() - t_start
            if errors:
                raise errors[0]
            res.par_rate = runs / wall
            res.par_p50 = percentile(sorted(x for s in par_lat for x in s), 50)

        progress(f"{tool.name}: memory")
        try:
            res.memory = tool.memory()
        except Exception as e:  # noqa: BLE001 - memory is optional
            res.notes.append(f"{tool.name}: memory not measured ({e})")
    except ImportError as e:
        res.error = f"not available: {e}"
    except Exception as e:  # noqa: BLE001 - one tool failing must not stop the others
        res.error = f"{type(e).__name__}: {e}"
        if os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()
    finally:
        try:
            res.notes.extend(tool.teardown())
        except Exception as e:  # noqa: BLE001
            res.notes.append(f"{tool.name}: teardown raised {e!r}")
    return res


# --- output -------------------------------------------------------------------------------

def fmt_bytes(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    return f"{n / 1024:.0f} KiB"


def fmt_ms(s: float | None) -> str:
    return "—" if s is None or math.isnan(s) else f"{s * 1000:.2f}"


def fmt_rate(r: float | None) -> str:
    return "—" if r is None else f"{r:.0f}"


def table_rows(results: list[Result], streams: int) -> tuple[list[str], list[list[str]]]:
    def p50_of(tool: str) -> float | None:
        found = next((r for r in results if r.tool == tool and not r.error and r.latencies), None)
        return found.p(50) if found else None

    runc_p50, bwrap_p50 = p50_of("runc"), p50_of("bwrap")
    cols = ["tool", "p50 ms", "p90 ms", "p99 ms", "runs/s (1 stream)",
            f"runs/s ({streams} streams)", f"p50 ms ({streams} streams)", "p50 vs runc", "p50 vs bwrap"]
    rows = []
    for r in results:
        if r.error or not r.latencies:
            rows.append([r.label, r.error or "no data"] + [""] * (len(cols) - 2))
            continue
        ratios = ["—" if not base else f"{r.p(50) / base:.2f}×" for base in (runc_p50, bwrap_p50)]
        rows.append([r.label, fmt_ms(r.p(50)), fmt_ms(r.p(90)), fmt_ms(r.p(99)),
                     fmt_rate(r.seq_rate), fmt_rate(r.par_rate), fmt_ms(r.par_p50), *ratios])
    return cols, rows


def _is_error_row(row: list[str]) -> bool:
    return all(c == "" for c in row[2:])


def render(results: list[Result], args: argparse.Namespace, markdown: bool) -> str:
    head = header_fields(args.rootfs)
    cols, rows = table_rows(results, args.streams)
    lines: list[str] = []
    runs_txt = f"{args.runs} runs per tool ({args.warmup} warm-up), {args.streams} streams"
    if markdown:
        lines.append("Spawn-to-exit of `/bin/true` in full isolation — "
                     + ", ".join(f"{k}: `{v}`" if k == "rootfs" else f"{k}: {v}" for k, v in head)
                     + f"; {runs_txt}.")
        lines.append("")
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
        for row in rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    else:
        lines.append("bench/runtime.py: spawn-to-exit of /bin/true — "
                     + "  ".join(f"{k}: {v}" for k, v in head))
        lines.append(runs_txt)
        ok_rows = [r for r in rows if not _is_error_row(r)]
        widths = [max([len(c)] + [len(r[i]) for r in ok_rows] + ([len(r[0]) for r in rows] if i == 0 else []))
                  for i, c in enumerate(cols)]
        def line(cells: list[str]) -> str:
            return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                             for i, c in enumerate(cells)).rstrip()
        lines.append(line(cols))
        lines.append(line(["-" * w for w in widths]))
        for row in rows:
            if _is_error_row(row):
                lines.append(f"{row[0].ljust(widths[0])}  {row[1]}")
            else:
                lines.append(line(row))
    mem = [(r.label, r.memory) for r in results if r.memory]
    notes = [n for r in results for n in r.notes]
    if mem:
        lines.append("")
        lines.append("Tool-side memory:" if not markdown else "Tool-side memory (PSS from /proc/PID/smaps_rollup):")
        for label, text in mem:
            lines.append(f"- {label}: {text}" if markdown else f"  {label}: {text}")
    if notes:
        lines.append("")
        lines.append("Notes:")
        for n in notes:
            lines.append(f"- {n}" if markdown else f"  {n}")
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rootfs", default=DEFAULT_ROOTFS, help=f"rootfs directory (default {DEFAULT_ROOTFS})")
    ap.add_argument("--runs", type=int, default=200, help="measured runs per tool and mode (default 200)")
    ap.add_argument("--streams", type=int, default=2, help="parallel streams for the throughput column (default 2)")
    ap.add_argument("--warmup", type=int, default=5, help="uncounted runs first (default 5)")
    ap.add_argument("--only", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    ap.add_argument("--markdown", action="store_true", help="print a README-ready markdown table")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    only = [t.strip() for t in args.only.split(",") if t.strip()]
    bad = [t for t in only if t not in TOOLS]
    if bad or not only:
        ap.error(f"--only: unknown tool(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(TOOLS)}")
    if args.runs < 1 or args.streams < 1 or args.warmup < 0:
        ap.error("--runs and --streams must be at least 1, --warmup at least 0")
    args.only = only
    args.rootfs = os.path.abspath(args.rootfs)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.path.isdir(args.rootfs) or not os.path.exists(os.path.join(args.rootfs, "bin", "true")):
        print(f"bench: rootfs {args.rootfs} not found; run `make prep`")
        return 1
    if os.geteuid() != 0:
        print("bench: must run as root (namespaces, cgroups, overlay mounts)")
        return 1

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"bench: {msg}", file=sys.stderr, flush=True)

    tmp = tempfile.mkdtemp(prefix="lcbench-")
    results: list[Result] = []
    cgroups_before = _count_cgroups()
    try:
        for name in TOOLS:  # fixed order: ours (its variants), runc, bwrap
            if name not in args.only:
                continue
            if name == "runc" and not peers.runc_available():
                progress("runc not installed (make bench-deps); skipped")
                continue
            if name == "bwrap" and not peers.bwrap_available():
                progress("bwrap not installed (make bench-deps); skipped")
                continue
            tool = Ours(args.rootfs, tmp, name) if name.startswith("ours") else {"runc": Runc, "bwrap": Bwrap}[name](args.rootfs, tmp)
            results.append(measure(tool, args.runs, args.streams, args.warmup, progress))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(tmp) and results:
            results[-1].notes.append(f"temp dir {tmp} could not be removed")
    grown = _count_cgroups() - cgroups_before
    if grown > 0 and results:
        results[-1].notes.append(f"{grown} more cgroups under /sys/fs/cgroup/pids than before the run")

    print(render(results, args, args.markdown))
    return 0 if results and all(r.error is None for r in results) else 2


if __name__ == "__main__":
    sys.exit(main())
