"""A throwaway one-node Slurm (munged + slurmctld + slurmd) for the benchmarks.

    with one_node_slurm() as slurm:
        if slurm is not None:
            subprocess.run(["sbatch", ...], env=slurm.env)

Needs root and Debian's `slurm-wlm munge` (make bench-deps); yields None when they are not
installed. Everything lives in one temporary directory: slurm.conf (commands and daemons are
pointed at it with SLURM_CONF; /etc/slurm is not read or written), a munge key and socket of
its own (AuthInfo=socket=...; /etc/munge and /run/munge are not used), state, spool, pid and
log files. The daemons run in the foreground as our child processes and are stopped by pid;
on exit the directory is removed, and slurmstepd processes started for this cluster and the
cgroups Slurm made (there were none before) are cleaned up too.

A one-node configuration (munge authentication, cgroup process tracking, backfill, cons_tres
by core, oversubscription allowed) with Slurm's fastest queue setting measured here,
SchedulerParameters=batch_sched_delay=0. jobcomp/filetxt records each finished job so a
benchmark can check that all of them completed (with step_errors(): Slurm records a job
whose step could not start as COMPLETED too).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
SCHEDULER_PARAMETERS = "batch_sched_delay=0"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class SlurmError(RuntimeError):
    pass


@dataclass
class OneNodeSlurm:
    directory: Path
    conf: Path
    env: dict[str, str]
    node: str
    setting: str  # the scheduler setting, for reports
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(list(args), env=self.env, capture_output=True, text=True)
        if check and out.returncode != 0:
            raise SlurmError(f"{' '.join(args)}: exit {out.returncode}: {out.stderr.strip()}")
        return out.stdout

    def queued(self) -> list[str]:
        """Ids of the jobs not yet finished (squeue's default states: pending, running, completing...)."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def completed(self) -> dict[str, int]:
        """Finished jobs by state, from the jobcomp/filetxt log."""
        states: dict[str, int] = {}
        log = self.directory / "jobcomp.log"
        if log.exists():
            for line in log.read_text().splitlines():
                for word in line.split():
                    if word.startswith("JobState="):
                        state = word.split("=", 1)[1]
                        states[state] = states.get(state, 0) + 1
        return states

    def step_errors(self) -> list[str]:
        """slurmstepd errors of batch jobs (a job whose step failed to start is still recorded
        as COMPLETED with exit code 0, so this is the way to tell)."""
        log = self.directory / "slurmd.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return [line for line in text.splitlines() if re.search(r"\[\d+\.batch\] error", line)]

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            proc = self.processes.get(name)
            status = "not started" if proc is None else ("running" if proc.poll() is None else f"exited {proc.returncode}")
            for path in (self.directory / f"{name}.log", self.directory / f"{name}.out"):
                if path.exists() and path.stat().st_size:
                    text = path.read_text(errors="replace").splitlines()[-lines:]
                    parts.append(f"--- {path.name} ({name} {status}) ---\n" + "\n".join(text))
        return "\n".join(parts)


def installed() -> bool:
    return all(shutil.which(b) for b in BINARIES)


def mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SlurmError("no MemTotal in /proc/meminfo")


def write_conf(d: Path, node: str, cpus: int, memory_mb: int, scheduler_parameters: str) -> Path:
    conf = d / "slurm.conf"
    conf.write_text(f"""\
# one-node benchmark cluster, written by bench/slurm.py
ClusterName=lclusterd-bench
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge.socket
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SchedulerType=sched/backfill
SchedulerParameters={scheduler_parameters}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MaxJobCount=100000
MaxArraySize=100001
MinJobAge=2
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/jobcomp.log
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=bench Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES:128
""")
    # Debian's slurmstepd needs the mount point spelled out, else every job fails with
    # "cgroup namespace 'freezer' not mounted" (and the node is drained).
    (d / "cgroup.conf").write_text("CgroupPlugin=autodetect\nCgroupMountpoint=/sys/fs/cgroup\n")
    return conf


def _slurm_cgroups() -> set[Path]:
    # cgroup v1: <controller>/slurm_<node> (proctrack/cgroup makes freezer/slurm_<node>); v2: slurm*
    return set(CGROUP_ROOT.glob("*/slurm*")) | set(CGROUP_ROOT.glob("slurm*"))


def _remove_cgroup_tree(top: Path) -> None:
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


def _stepds(conf: Path) -> list[int]:
    """Live slurmstepd processes of this cluster (slurmd passes SLURM_CONF on to them)."""
    marker = f"SLURM_CONF={conf}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "slurmstepd":
                continue
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def one_node_slurm(parent: str | Path | None = None, *, scheduler_parameters: str = SCHEDULER_PARAMETERS,
                   start_timeout: float = 60) -> Iterator[OneNodeSlurm | None]:
    """Start a one-node Slurm in a new directory under `parent` (default: the temp dir) and
    yield it once the node is idle; yield None if Slurm or munge is not installed."""
    if not installed():
        yield None
        return
    if os.geteuid() != 0:
        raise SlurmError("a one-node Slurm needs root (slurmd runs jobs as their users)")
    d = Path(tempfile.mkdtemp(prefix="lclusterd-slurm-", dir=parent))
    d.chmod(0o755)  # munged wants its socket's directory searchable by all
    cgroups_before = _slurm_cgroups()
    node = socket.gethostname().split(".")[0]
    slurm = None
    try:
        for sub in ("state", "spool"):
            (d / sub).mkdir()
        conf = write_conf(d, node, os.cpu_count() or 1, mem_total_mb(), scheduler_parameters)
        env = dict(os.environ, SLURM_CONF=str(conf))
        slurm = OneNodeSlurm(d, conf, env, node, scheduler_parameters)
        key = d / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(128))
            key.chmod(0o600)

        def start(name: str, argv: list[str]) -> None:
            with open(d / f"{name}.out", "wb") as out:
                slurm.processes[name] = subprocess.Popen(argv, env=env, cwd=d, stdin=subprocess.DEVNULL,
                                                         stdout=out, stderr=subprocess.STDOUT)

        start("munged", ["munged", "-F", f"--socket={d}/munge.socket", f"--key-file={key}",
                         f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                         f"--seed-file={d}/munged.seed"])
        _wait_for(slurm, lambda: (d / "munge.socket").exists(), start_timeout, "munged's socket")
        start("slurmctld", ["slurmctld", "-D", "-f", str(conf)])
        _wait_for(slurm, lambda: slurm.run("scontrol", "ping", check=False).find("is UP") >= 0,
                  start_timeout, "slurmctld to answer `scontrol ping`")
        start("slurmd", ["slurmd", "-D", "-f", str(conf)])
        _wait_for(slurm, lambda: slurm.run("sinfo", "-h", "-N", "-n", node, "-o", "%T", check=False).strip() == "idle",
                  start_timeout, f"node {node} to be idle in sinfo")
        yield slurm
    finally:
        if slurm is not None:
            with contextlib.suppress(Exception):
                if slurm.processes.get("slurmctld") and slurm.processes["slurmctld"].poll() is None:
                    left = slurm.queued()
                    if left:
                        slurm.run("scancel", *left, check=False)
            for name in ("slurmd", "slurmctld"):
                if name in slurm.processes:
                    _stop(slurm.processes[name])
            for pid in _stepds(slurm.conf):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if "munged" in slurm.processes:
                _stop(slurm.processes["munged"])
        for top in _slurm_cgroups() - cgroups_before:
            _remove_cgroup_tree(top)
        shutil.rmtree(d, ignore_errors=True)


def _wait_for(slurm: OneNodeSlurm, ready, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        dead = [n for n, p in slurm.processes.items() if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            why = f"{', '.join(dead)} exited" if dead else f"no answer in {timeout:.0f}s"
            raise SlurmError(f"one-node Slurm in {slurm.directory}: waiting for {what}: {why}\n{slurm.log_tails()}")
        time.sleep(0.2)
