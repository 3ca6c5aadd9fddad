"""The -add options turned into the API's JobSpec, each value checked first: a bad one is one
line and exit 2 before any call."""

from __future__ import annotations

import sys

from lclient import errors
from lclient.lazy import LazyModule
from lclient.units import parse_count, parse_cpus, parse_duration, parse_memory

pb = LazyModule("lclusterd.rpc.lclusterd_pb2")


def parse_value(name: str, text: str, parser):
    try:
        return parser(text)
    except ValueError as exc:
        raise errors.InvalidRequest(f"bad {name} value {text!r}: {exc}") from None


def utf8(what: str, text: str) -> str:
    """`text` if it can be sent (the API's strings are UTF-8, and an argument that is not
    reaches Python as surrogates that gRPC cannot encode); InvalidRequest naming it otherwise."""
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) & 0xFF
        raise errors.InvalidRequest(f"{what} is not valid UTF-8 (byte 0x{byte:02x} at offset {exc.start})") from None
    return text


def check_utf8(o: dict) -> None:
    """Every argument that travels as an API string (the -add spec's are checked with it)."""
    for key in ("check", "kill", "logs", "wait", "drain", "undrain"):
        if isinstance(o[key], str):
            utf8(f"the -{key} argument", o[key])
    if o["exec_"]:
        utf8("the -exec uuid", o["exec_"][0])
    for state in o["states"]:
        utf8("the -state argument", state)


def job_spec(o: dict) -> pb.JobSpec:
    spec = pb.JobSpec(command=utf8("the command", o["add"]))
    for parent in (o["after"] or "").split(",") if o["after"] is not None else ():
        if not parent.strip():
            raise errors.InvalidRequest(f"bad -after value {o['after']!r}: expected UUID[,UUID...]")
        spec.after.append(utf8("the -after argument", parent.strip()))
    if o["mem"]:
        spec.memory_bytes = parse_value("-mem", o["mem"], parse_memory)
    if o["cpus"]:
        spec.cpus = parse_value("-cpus", o["cpus"], parse_cpus)
    if o["pids"]:
        spec.pids = parse_value("-pids", o["pids"], parse_count)
    if o["timeout"]:
        spec.timeout_seconds = parse_value("-timeout", o["timeout"], parse_duration)
    if o["retries"]:
        spec.retries = parse_value("-retries", o["retries"], lambda t: parse_count(t, 0))
    if o["node"]:
        spec.node = utf8("the -node name", o["node"])
    if o["image"]:
        spec.image = utf8("the -image name", o["image"])
    for item in o["env"]:
        name, sep, value = utf8("an -env value", item).partition("=")
        if not sep or not name:
            raise errors.InvalidRequest(f"bad -env value {item!r}: expected NAME=VALUE")
        spec.env[name] = value
    if o["net"] or o["publish"] or o["volume"] or o["workdir"] or o["run_as"]:
        from lclient.netopts import network_and_volumes  # only for these options: lclient starts light

        network_and_volumes(spec, o["net"], o["publish"], o["volume"], o["workdir"], o["run_as"], utf8)
    if o["stdin"]:
        spec.stdin = read_stdin(o["stdin"])
    return spec


def read_stdin(source: str) -> bytes:
    """The bytes -stdin names: a file, or '-' for this process's standard input."""
    try:
        if source == "-":
            return sys.stdin.buffer.read()
        with open(source, "rb") as f:
            return f.read()
    except OSError as exc:
        raise errors.InvalidRequest(f"cannot read -stdin file {source}: {exc.strerror}") from None
