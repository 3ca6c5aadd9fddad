"""CPU per job by process, read from /proc around a benchmark's rounds: the daemon, its fork
server, the jobs' own processes (the fork server's reaped children: each job init and,
through it, everything the job ran), etcd, and the benchmark's own process (its client).

On a machine the benchmark saturates, throughput follows CPU per job, and CPU per job is far
steadier from run to run than throughput is (README "2026-12-03"): this is the figure to
compare two versions of the code by.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")
PARTS = ("daemon", "fork server", "jobs", "etcd", "client")


def _times(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of `pid`."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK


def fork_server_of(daemon_pid: int) -> int | None:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(daemon_pid)], capture_output=True, text=True).stdout
    found = [int(line.split()[0]) for line in out.splitlines() if "forkserver" in line]
    return found[0] if found else None


@dataclass
class CpuMeter:
    daemon: int
    etcd: int

    def read(self) -> dict[str, float]:
        helper = fork_server_of(self.daemon)
        own, reaped = _times(helper) if helper else (0.0, 0.0)
        me = os.times()
        return {"daemon": _times(self.daemon)[0], "fork server": own, "jobs": reaped, "etcd": _times(self.etcd)[0],
                "client": me.user + me.system}


def per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> str:
    """'daemon 1.80 / fork server 1.02 / ...' in ms of CPU per job."""
    return " / ".join(f"{part} {(after[part] - before[part]) * 1000 / jobs:.2f}" for part in PARTS)
