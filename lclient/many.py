"""lclient's options for many jobs: `-add -` (one job per line of stdin, every line checked
before one Add call queues them all, or, when the node refuses one, none; their uuids printed
one per line, in order), and where -array, -after and -expand go. Imported only when used."""

from __future__ import annotations

from typing import BinaryIO, Callable

import click

from lclient import errors
from lclient.client import JobsClient
from lclient.format import dumps, job_json
from lclusterd.rpc import lclusterd_pb2 as pb


def read_commands(stream: BinaryIO) -> list[str]:
    """The commands on `stream`, one per line; blank lines are skipped. InvalidRequest (exit 2)
    naming the line for one that is not UTF-8 or holds a NUL byte, or when there is none."""
    commands = []
    for number, raw in enumerate(stream.read().split(b"\n"), 1):
        raw = raw.removesuffix(b"\r")
        try:
            line = raw.decode()
        except UnicodeDecodeError as exc:
            raise errors.InvalidRequest(f"line {number} of stdin is not valid UTF-8 (byte 0x{raw[exc.start]:02x} "
                                        f"at offset {exc.start})") from None
        if "\0" in line:
            raise errors.InvalidRequest(f"line {number} of stdin contains a NUL byte")
        if line.strip():
            commands.append(line)
    if not commands:
        raise errors.InvalidRequest("-add - found no command on stdin (one per line)")
    return commands


def add_batch(client: JobsClient, stream: BinaryIO, base: pb.JobSpec, as_json: bool, echo: Callable[[str], None]) -> int:
    """Queue one job per line of `stream`, each `base` with that command; print their uuids."""
    jobs = client.add_batch([with_command(base, command) for command in read_commands(stream)])
    echo("\n".join(dumps(job_json(job)) if as_json else job.id for job in jobs))
    return errors.EXIT_OK


def with_command(base: pb.JobSpec, command: str) -> pb.JobSpec:
    spec = pb.JobSpec()
    spec.CopyFrom(base)
    spec.command = command
    return spec


def check_options(action: str, o: dict) -> None:
    """-array, -after, -expand and -add -: where each goes."""
    for key in ("array", "after"):
        if o[key] is not None and action != "-add":
            raise click.UsageError(f"-{key} goes with -add")
    if o["expand"] and action != "-list":
        raise click.UsageError("-expand goes with -list")
    if o["array"] is not None and (o["all_nodes"] or o["follow"]):
        raise click.UsageError("-array queues many jobs; leave out " + ("-all-nodes" if o["all_nodes"] else "-follow"))
    if action == "-add" and o["add"] == "-":
        for key in ("array", "all_nodes", "follow", "wait"):
            if o[key]:
                raise click.UsageError(f"-add - queues one job per line of stdin; leave out -{key.replace('_', '-')}")
        if o["stdin"] == "-":
            raise click.UsageError("-add - reads the commands from stdin; -stdin - cannot read it as well")
