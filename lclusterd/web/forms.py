"""A job spec from what the page's form or a POST /api/jobs sends: the options of `lclient
-add`, by the same names (`volumes` for -volume), parsed by the same functions
(lclient/units.py), so `mem=64M` means here what `-mem 64M` means there. What the values must
be (an image name, a network mode, published ports, volumes, a user) is checked once, by admission,
for the web as for lclient. Pure."""

from __future__ import annotations

from typing import Any

from lclient.units import parse_count, parse_cpus, parse_duration, parse_memory
from lclusterd.errors import InvalidSpec
from lclusterd.model import JobSpec

FIELDS = ("command", "mem", "cpus", "pids", "timeout", "env", "stdin", "retries", "node", "all_nodes", "image", "net",
          "publish", "volumes", "workdir", "run_as")


def spec_from(data: dict[str, Any]) -> tuple[JobSpec, bool]:
    """The spec and whether it is a pool (all_nodes); InvalidSpec naming the first bad field.
    Values may be strings (a form) or JSON numbers; env is {NAME: VALUE} or NAME=VALUE lines."""
    if not isinstance(data, dict):
        raise InvalidSpec("expected a JSON object with the job's command and options")
    unknown = sorted(set(data) - set(FIELDS) - {"csrf"})
    if unknown:
        raise InvalidSpec(f"unknown field {unknown[0]!r}: expected some of {', '.join(FIELDS)}")
    command = data.get("command")
    if not isinstance(command, str):
        raise InvalidSpec("command must be a string (run as /bin/sh -c COMMAND)")
    spec = JobSpec(command=command, env=_env(data.get("env")), stdin_data=_text("stdin", data.get("stdin")).encode(),
                   node=_text("node", data.get("node")).strip(), image=_text("image", data.get("image")).strip(),
                   net=_text("net", data.get("net")).strip() or "none", publish=_entries("publish", data.get("publish")),
                   volumes=_entries("volumes", data.get("volumes")), workdir=_text("workdir", data.get("workdir")).strip(),
                   run_as=_text("run_as", data.get("run_as")).strip())
    spec.memory_bytes = _parsed(data, "mem", parse_memory)
    spec.cpus = _parsed(data, "cpus", parse_cpus)
    spec.pids = _parsed(data, "pids", parse_count)
    spec.timeout = _parsed(data, "timeout", parse_duration)
    spec.retries = _parsed(data, "retries", lambda text: parse_count(text, 0)) or 0
    return spec, _flag(data.get("all_nodes"))


def _parsed(data: dict[str, Any], name: str, parser):
    value = data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidSpec(f"bad {name} value {value!r}: expected a string or a number")
    try:
        return parser(str(value).strip())
    except ValueError as exc:
        raise InvalidSpec(f"bad {name} value {value!r}: {exc}") from None


def _text(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidSpec(f"{name} must be a string")
    return value


def _entries(name: str, value: Any) -> list[str]:
    """-publish's or -volume's entries: a JSON list of strings, or one a line (the form's
    textarea; a volume's path may hold spaces and commas, never a newline)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [line.strip() for line in value.splitlines() if line.strip()]
    if isinstance(value, list) and all(isinstance(entry, str) for entry in value):
        return list(value)
    raise InvalidSpec(f"{name} must be a list of strings (or one a line)")


def _env(value: Any) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):  # the form's textarea: NAME=VALUE lines
        pairs = [line.partition("=") for line in value.splitlines() if line.strip()]
        bad = [name + sep + rest for name, sep, rest in pairs if not sep or not name.strip()]
        if bad:
            raise InvalidSpec(f"bad env value {bad[0]!r}: expected NAME=VALUE")
        return {name.strip(): rest for name, _, rest in pairs}
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise InvalidSpec("env must be an object of strings (or NAME=VALUE lines)")


def _flag(value: Any) -> bool:
    if value in (None, False, "", "0", "false", "off"):
        return False
    if value in (True, "1", "true", "on"):
        return True
    raise InvalidSpec(f"bad all_nodes value {value!r}: expected true or false")


def number(name: str, text: str) -> int:
    """A query's whole, non-negative number (a limit, an offset); InvalidSpec otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise InvalidSpec(f"bad {name} value {text!r}: expected a whole number") from None
    if value < 0:
        raise InvalidSpec(f"{name} must not be negative, not {value}")
    return value
