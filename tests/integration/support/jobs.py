"""Jobs through real nodes, as a user sees them: add and check with lclient, wait for a
condition, and read where a job ran (the nodes' log files) and whether a process lives.
Each node is a processes.NodeProcess."""

from __future__ import annotations

import json
import time
from pathlib import Path

from support.processes import NodeProcess


def add(daemon: NodeProcess, command: str, *args: str, quiet: bool = False) -> str:
    """`lclient -add COMMAND ARGS...` through `daemon`, which must succeed; the new job's id.
    quiet: lclient must also have written nothing on stderr."""
    result = daemon.lclient("-add", command, *args)
    assert result.returncode == 0, result.stderr
    if quiet:
        assert result.stderr == ""
    return result.stdout.strip()


def check(daemon: NodeProcess, job: str) -> dict:
    """The job's record as `lclient -check JOB -json` prints it through `daemon`."""
    result = daemon.lclient("-check", job, "-json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def until(predicate, what: str, timeout: float = 20):
    """Poll for a state the test cannot be told about (no timing assertion: the bound is generous);
    predicate's first true value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def nodes(daemon: NodeProcess) -> dict[str, dict]:
    """`lclient -nodes -json` through `daemon`, by node name."""
    result = daemon.lclient("-nodes", "-json")
    assert result.returncode == 0, result.stderr
    return {n["name"]: n for n in map(json.loads, result.stdout.splitlines())}


def ran_on(daemons: list[NodeProcess], job: str) -> set[str]:
    """The nodes that handed the job to their runtime: each creates <state>/logs/<uuid>.out first."""
    return {d.name for d in daemons if Path(d.state_dir, "logs", f"{job}.out").exists()}


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def assert_stream_ended_once(daemons: list[NodeProcess], ids: list[str], records: dict[str, dict], lost_node: str) -> None:
    """Job i of a stream of `echo i` jobs ended EXITED exactly once: earlier attempts are recorded
    LOST with `lost_node`, it ran only on the nodes its record names, and the log on the node that
    finished it holds its output once (logs are appended to: a second start there would show)."""
    daemon_of = {d.name: d for d in daemons}
    for i, job in enumerate(ids):
        record = records[job]
        assert record["state"] == "EXITED" and record["attempt"] == len(record["history"]) + 1, record
        assert all(h["state"] == "LOST" and h["node"] == lost_node for h in record["history"])
        runs = ran_on(daemons, job)
        assert record["node"] in runs and runs <= {record["node"], *(h["node"] for h in record["history"])}, (job, runs, record)
        assert Path(daemon_of[record["node"]].state_dir, "logs", f"{job}.out").read_text() == f"{i}\n", (job, record)
