"""Peer tools for the runtime benchmark: runc and bubblewrap, each run as a user would.

Small functions only; bench/runtime.py does the timing and the table. Every call sends
the tool's stdio to files or /dev/null, never to a pipe: runc hands its stdio to the
container's init, and a caller reading runc's stderr through a pipe hangs until the
container ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

RUNC = "runc"
BWRAP = "bwrap"


class PeerError(RuntimeError):
    """A peer tool failed to run /bin/true; the message carries its stderr."""


def runc_available() -> bool:
    return shutil.which(RUNC) is not None


def bwrap_available() -> bool:
    return shutil.which(BWRAP) is not None


def tool_version(tool: str) -> str:
    """First line of `tool --version`, e.g. 'runc version 1.1.5+ds1' / 'bubblewrap 0.8.0'."""
    try:
        out = subprocess.run([tool, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return tool
    return (out.splitlines() or [tool])[0].strip()


# --- runc ---------------------------------------------------------------------------------

def make_runc_bundle(rootfs: str, tmp: str, args: list[str] | None = None) -> str:
    """Write an OCI bundle (config.json from `runc spec`) into `tmp` and return its path.

    The bundle points at `rootfs` read-only (no copy); `tmp` also gets a `state` directory
    to pass as `runc --root` and a `stdio` log file. Everything lives under `tmp`, so
    removing `tmp` removes it all (after cleanup_runc_state)."""
    bundle = os.path.join(tmp, "bundle")
    os.makedirs(bundle, exist_ok=True)
    os.makedirs(os.path.join(tmp, "state"), exist_ok=True)
    subprocess.run([RUNC, "spec", "--bundle", bundle], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = os.path.join(bundle, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = list(args or ["/bin/true"])
    config["root"] = {"path": os.path.abspath(rootfs), "readonly": True}
    with open(path, "w") as f:
        json.dump(config, f, indent=1)
    return bundle


def runc_state_dir(bundle: str) -> str:
    return os.path.join(os.path.dirname(bundle), "state")


def _runc_log(bundle: str) -> str:
    return os.path.join(os.path.dirname(bundle), "stdio.log")


def runc_command(bundle: str, container_id: str) -> list[str]:
    return [RUNC, "--root", runc_state_dir(bundle), "run", "--bundle", bundle, container_id]


def run_runc_once(bundle: str, container_id: str) -> int:
    """`runc run` one container to completion (create + start + wait + delete).

    Returns the container's exit code; raises PeerError if runc itself failed."""
    # One log file per call: parallel streams must not share a file offset, and the
    # file is tiny (empty when all goes well).
    log = f"{_runc_log(bundle)}.{container_id}"
    with open(log, "wb") as out:
        rc = subprocess.run(runc_command(bundle, container_id), stdin=subprocess.DEVNULL,
                            stdout=out, stderr=out).returncode
    if rc != 0:
        with open(log, "rb") as f:
            msg = f.read().decode(errors="replace").strip()
        os.unlink(log)
        raise PeerError(f"runc run {container_id} exited {rc}: {msg or '(no output)'}")
    os.unlink(log)
    return rc


def cleanup_runc_state(bundle: str) -> list[str]:
    """Force-delete any container left in this bundle's state dir; return their ids."""
    state = runc_state_dir(bundle)
    if not os.path.isdir(state):
        return []
    left = [name for name in os.listdir(state) if os.path.isdir(os.path.join(state, name))]
    for cid in left:
        subprocess.run([RUNC, "--root", state, "delete", "--force", cid], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return left


# --- bubblewrap ---------------------------------------------------------------------------

def bwrap_command(rootfs: str, argv: list[str] | None = None) -> list[str]:
    return [BWRAP, "--unshare-all", "--ro-bind", os.path.abspath(rootfs), "/",
            "--proc", "/proc", "--dev", "/dev", *(argv or ["/bin/true"])]


def run_bwrap_once(rootfs: str) -> int:
    """`bwrap --unshare-all` /bin/true on the rootfs; raises PeerError if it failed."""
    with tempfile.TemporaryFile() as out:
        rc = subprocess.run(bwrap_command(rootfs), stdin=subprocess.DEVNULL, stdout=out,
                            stderr=out).returncode
        if rc != 0:
            out.seek(0)
            msg = out.read().decode(errors="replace").strip()
            raise PeerError(f"bwrap exited {rc}: {msg or '(no output)'}")
    return rc


# --- tool-side memory per running job -----------------------------------------------------

def smaps_rollup(pid: int) -> dict[str, int]:
    """{'Rss': bytes, 'Pss': bytes} of a process, or {} if it is gone or unreadable."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        return {}
    return out


def children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(x) for x in f.read().split())
    except OSError:
        pass
    return kids


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants, parents first."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children(p))
    return out


def _tool_tree_memory(cmds: list[list[str]], tool_comm: str, settle: float = 0.8) -> dict[str, int]:
    """Start every command of `cmds` at once (each one job that sleeps), wait, and sum
    Rss/Pss over the processes named `tool_comm` in their trees (the tool's own
    processes, not the jobs'). Returns totals and 'jobs'; kills them all after.

    With several jobs running, PSS splits the tool's shared pages between them, so
    Pss / jobs is the tool's memory cost of one more running job."""
    procs = [subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True) for cmd in cmds]
    try:
        time.sleep(settle)
        total = {"Rss": 0, "Pss": 0, "procs": 0, "jobs": len(cmds)}
        seen: set[int] = set()
        todo = [p.pid for p in procs]
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            todo.extend(children(pid))
            if comm(pid).startswith(tool_comm):
                mem = smaps_rollup(pid)
                if mem:
                    total["Rss"] += mem.get("Rss", 0)
                    total["Pss"] += mem.get("Pss", 0)
                    total["procs"] += 1
        return total if total["procs"] else {}
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
        for p in procs:
            p.wait()


def runc_job_memory(rootfs: str, tmp: str, jobs: int = 8) -> dict[str, int]:
    """Tool-side memory of `jobs` attached `runc run` while their containers sleep."""
    bundle = make_runc_bundle(rootfs, os.path.join(tmp, "mem"), args=["/bin/sleep", "5"])
    cmds = [runc_command(bundle, f"lcbench-mem-{os.getpid()}-{i}") for i in range(jobs)]
    try:
        return _tool_tree_memory(cmds, "runc")
    finally:
        # killpg above kills the attached runc processes; the containers' inits are
        # removed (killed) with the state.
        cleanup_runc_state(bundle)


def bwrap_job_memory(rootfs: str, jobs: int = 8) -> dict[str, int]:
    """Tool-side memory of `jobs` bwrap instances (outer process + pid-1 init each)."""
    return _tool_tree_memory([bwrap_command(rootfs, ["/bin/sleep", "5"])] * jobs, "bwrap")
