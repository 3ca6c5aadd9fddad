"""Parsing of human sizes ("64M") and durations ("30s", "1m30s", "500ms"). Pure."""

from __future__ import annotations

import re

from lclusterd.errors import InvalidSpec

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_FACTORS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(text: str) -> int:
    """Bytes from "1048576", "64M", "64MiB", "1.5G" (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise InvalidSpec(f"invalid size {text!r} (examples: 64M, 512MiB, 2G)")
    number, unit, _ = match.groups()
    return int(float(number) * _SIZE_FACTORS[unit.lower()])


def parse_duration(text: str) -> float:
    """Seconds from "30", "30s", "1m30s", "500ms", "2h"."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidSpec(f"invalid duration {text!r} (examples: 30s, 5m, 1h30m, 500ms)")
    return sum(float(n) * _DURATION_FACTORS[u] for n, u in parts)


def format_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
