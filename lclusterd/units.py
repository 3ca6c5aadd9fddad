"""Parsing of human sizes ("64M") and durations ("30s", "1m30s", "500ms"). Pure.

Shared by lclient and the runtime CLI; errors are ValueErrors with a message that
completes "bad -mem value '12Q': ...". """

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_FACTORS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(text: str) -> int:
    """Bytes from "1048576", "64M", "64MiB", "1.5G" (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError("expected a size like 64M or 1G")
    number, unit, _ = match.groups()
    size = int(float(number) * _SIZE_FACTORS[unit.lower()])
    if size < 1:
        raise ValueError("the size must be at least 1 byte")
    return size


def parse_size_or_share(text: str) -> tuple[int, float]:
    """(bytes, 0.0) from a size as parse_size reads it, or (0, share) from "N%" (0 < N <= 100),
    or (0, 0.0) from "0" (none)."""
    text = (text or "").strip()
    if text == "0":
        return 0, 0.0
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share <= 100:
            raise ValueError("expected a size like 10G, a share of the disk like 10%, or 0")
        return 0, share / 100
    return parse_size(text), 0.0


def parse_duration(text: str) -> float:
    """Seconds from "30", "30s", "1m30s", "500ms", "2h"."""
    text = (text or "").strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
    else:
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError("expected a duration like 30s, 5m or 1h")
        seconds = sum(float(n) * _DURATION_FACTORS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError("the duration must be positive")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of parse_duration for display: 604800 -> "7d", 90 -> "1m30s", 0.25 -> "250ms"."""
    parts, left = [], round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0ms"


def format_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
