"""`python -m lclusterd.runtime run [--mem 64M --pids 32 --cpus 0.5 --timeout 5s] [--net bridge --publish 8080:80]
[--volume-root /srv --volume /srv/data:/data:ro] [--workdir /data] [--user 1000:1000] -- CMD...`

Runs one command through the runtime alone (no etcd, no gRPC): the handle for tests
and benchmarks. The job's stdout and stderr go to this command's own (or to files);
the result goes to stderr as one line, or to stdout as JSON with --json.
Exit status: the job's exit code; 128+N when signal N ended it; 124 on timeout;
125 when the runtime could not start the command; 2 for bad options.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from typing import Any, Callable

import click

from lclusterd.errors import LclusterdError, SetupFailed
from lclusterd.runtime import userns
from lclusterd.runtime.host import DEFAULT_ROOTFS
from lclusterd.runtime.launcher import IdRanges, Launcher
from lclusterd.runtime.netconf import DEFAULT_BRIDGE, DEFAULT_SUBNET, NetworkConfig
from lclusterd.runtime.spec import FAILED, TIMED_OUT, RunResult, RuntimeSpec
from lclusterd.runtime.volumes import VolumeRoots
from lclusterd.units import format_size, parse_duration, parse_size

DEFAULT_STATE_DIR = "/var/lib/lclusterd/runtime-cli"  # apart from the daemon's, whose start-up sweep would remove these jobs
EXIT_TIMED_OUT = 124
EXIT_NOT_STARTED = 125


@click.group()
def cli() -> None:
    """The lclusterd container runtime on its own."""


@cli.command(context_settings={"ignore_unknown_options": False})
@click.option("--rootfs", default=DEFAULT_ROOTFS, show_default=True, help="Root filesystem the job sees (read-only base).")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True, help="The fork server's state: the mount point of every job's scratch tmpfs (in the job's own mount namespace).")
@click.option("--cgroup-parent", default="lclusterd/cli", show_default=True, help="Parent cgroup of the job's cgroup.")
@click.option("--mem", "memory", help="Memory limit, e.g. 64M.")
@click.option("--cpus", type=float, help="CPU quota as a fraction of cores, e.g. 0.5.")
@click.option("--pids", type=int, help="Maximum number of processes.")
@click.option("--timeout", help="Kill the job after this long, e.g. 5s, 2m.")
@click.option("--grace", default="2s", show_default=True, help="Time between SIGTERM and SIGKILL.")
@click.option("--env", "env", multiple=True, help="K=V, repeatable.")
@click.option("--workdir", "--cwd", "cwd", default="/", show_default=True,
              help="Working directory inside the job (made in its writable layer if the rootfs lacks it).")
@click.option("--hostname", help="Hostname (default: the job id's first 12 characters).")
@click.option("--user", default="", help="Run as USER[:GROUP] (names or ids; names from the rootfs's /etc/passwd and /etc/group).")
@click.option("--stdin", "stdin_file", type=click.File("rb"), help="File whose content is the job's stdin.")
@click.option("--stdout", "stdout_path", help="Host file for the job's stdout (default: this command's stdout).")
@click.option("--stderr", "stderr_path", help="Host file for the job's stderr (default: this command's stderr).")
@click.option("--sh", "shell", help="Run this command line with /bin/sh -c instead of CMD.")
@click.option("--userns", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Run the job in a user namespace of its own (its root is an unprivileged host uid).")
@click.option("--net", type=click.Choice(["none", "bridge"]), default="none", show_default=True,
              help="none: loopback only; bridge: an address on the bridge, outbound NAT, published ports.")
@click.option("--publish", multiple=True, help="HOSTPORT:PORT[/udp]: the host's port to the job's (with --net bridge), repeatable.")
@click.option("--bridge", default=DEFAULT_BRIDGE, show_default=True, help="The bridge of --net bridge (shared with other runtimes).")
@click.option("--subnet", default=DEFAULT_SUBNET, show_default=True, help="The bridge's IPv4 subnet; jobs take addresses of it.")
@click.option("--volume", "volumes", multiple=True,
              help="HOST:PATH[:ro]: bind the host directory HOST (beneath a --volume-root) at PATH, repeatable.")
@click.option("--volume-root", "volume_roots", multiple=True,
              help="A directory volumes may come from, repeatable (none: --volume is refused).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.argument("command", nargs=-1)
def run(rootfs: str, state_dir: str, cgroup_parent: str, memory: str | None, cpus: float | None,
        pids: int | None, timeout: str | None, grace: str, env: tuple[str, ...], cwd: str,
        hostname: str | None, user: str, stdin_file: object, stdout_path: str, stderr_path: str,
        shell: str | None, userns: str, net: str, publish: tuple[str, ...], bridge: str, subnet: str,
        volumes: tuple[str, ...], volume_roots: tuple[str, ...], as_json: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND (after --) isolated in its own namespaces, cgroup and rootfs."""
    try:
        if bool(shell) == bool(command):
            raise click.UsageError("give either a command after -- or --sh 'command line'")
        argv = ["/bin/sh", "-c", shell] if shell else list(command)
        environment = {}
        for item in env:
            name, sep, value = item.partition("=")
            if not sep:
                raise click.UsageError(f"--env takes K=V, not {item!r}")
            environment[name] = value
        spec = RuntimeSpec(
            job_id=uuid.uuid4().hex, argv=argv, rootfs=rootfs, env=environment, cwd=cwd, hostname=hostname, user=user,
            memory_bytes=_parse("--mem", memory, parse_size), cpus=cpus, pids=pids,
            timeout=_parse("--timeout", timeout, parse_duration), grace=_parse("--grace", grace, parse_grace),
            stdin_data=stdin_file.read() if stdin_file else None,  # type: ignore[attr-defined]
            stdout_path=stdout_path, stderr_path=stderr_path, net=net, publish=list(publish), volumes=list(volumes))
        spec.validate()
        network = NetworkConfig(bridge, subnet) if net == "bridge" else None  # none: no bridge is touched
        if network is not None:
            network.validate()
        VolumeRoots.checked(list(volume_roots))  # a missing root is a bad option, not a failed start
    except (LclusterdError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    # Without files or stdin data the job shares this command's own stdio.
    stdio = None
    if stdout_path is None and stderr_path is None and stdin_file is None:
        stdio = (os.open("/dev/null", os.O_RDONLY), sys.stdout.fileno(), sys.stderr.fileno())
    elif stdout_path is None or stderr_path is None:
        raise click.UsageError("give both --stdout and --stderr, or neither")
    try:
        ids = user_namespaces() if userns == "on" else None
        with Launcher(state_dir, cgroup_parent=cgroup_parent, userns=ids, network=network,
                      volume_roots=list(volume_roots)) as launcher:
            # Ctrl-C kills the job (and the run ends as KILLED) instead of leaving it.
            signal.signal(signal.SIGINT, lambda *_: launcher.kill(spec.job_id))
            result = launcher.run(spec, stdio=stdio)
    except LclusterdError as error:
        click.echo(f"lclusterd.runtime: {error}", err=True)
        sys.exit(EXIT_NOT_STARTED)
    if as_json:
        click.echo(json.dumps(result.to_json(), sort_keys=True))
    else:
        click.echo(f"lclusterd.runtime: {describe(result)}", err=True)
    sys.exit(exit_status(result))


def user_namespaces() -> IdRanges:
    """The host ids jobs' user namespaces take (`make prep` adds them); SetupFailed if none."""
    ranges = userns.subordinate_ranges()
    if ranges is None:
        raise SetupFailed("user namespaces", f"{userns.MISSING_RANGES}; or run with --userns off")
    return ranges


def _parse(option: str, text: str | None, parse: Callable[[str], Any]) -> Any:
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as error:
        raise click.UsageError(f"bad {option} value {text!r}: {error}") from None


def parse_grace(text: str) -> float:
    """A grace period may be zero (SIGKILL at once)."""
    return 0.0 if text.strip() in ("0", "0s") else parse_duration(text)


def describe(result: RunResult) -> str:
    parts = [result.status]
    if result.exit_code is not None:
        parts.append(f"exit_code={result.exit_code}")
    if result.signal is not None:
        parts.append(f"signal={signal.Signals(result.signal).name}")
    parts.append(f"peak_memory={format_size(result.peak_memory_bytes)}")
    if result.cpu_seconds is not None:
        parts.append(f"cpu={result.cpu_seconds:.3f}s")
    if result.address:
        parts.append(f"address={result.address}")
    if result.error:
        parts.append(f"({result.error})")
    return " ".join(parts)


def exit_status(result: RunResult) -> int:
    if result.status == FAILED:
        return EXIT_NOT_STARTED
    if result.status == TIMED_OUT:
        return EXIT_TIMED_OUT
    if result.signal is not None:
        return 128 + result.signal
    return result.exit_code if result.exit_code is not None else EXIT_NOT_STARTED


if __name__ == "__main__":
    cli()
