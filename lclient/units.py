"""Parsing of -mem, -cpus, -pids, -timeout values. Pure."""

from __future__ import annotations

import math
import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_SIZE_FACTOR = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_DURATION_FACTOR = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size(text: str) -> int:
    """'64M' -> 67108864 (K, M, G, T are powers of 1024; a plain number is bytes)."""
    match = _SIZE.match(text or "")
    if not match:
        raise ValueError("expected a size like 64M or 1G")
    value = float(match.group(1)) * _SIZE_FACTOR[match.group(2).lower()]
    if value < 1 or not math.isfinite(value):
        raise ValueError("the size must be at least 1 byte")
    return int(value)


def parse_duration(text: str) -> float:
    """'30s', '5m', '1h', '250ms', or plain seconds -> seconds."""
    match = _DURATION.match(text or "")
    if not match:
        raise ValueError("expected a duration like 30s, 5m or 1h")
    value = float(match.group(1)) * _DURATION_FACTOR[match.group(2).lower() if match.group(2) else None]
    if value <= 0:
        raise ValueError("the duration must be positive")
    return value


def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of cores like 0.5 or 2") from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError("the number of cores must be positive")
    return value


def parse_count(text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value < minimum:
        raise ValueError(f"must be at least {minimum}")
    return value


def format_size(value: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= factor and value % factor == 0:
            return f"{value // factor}{unit}"
    return f"{value}B" if value < 1 << 10 else f"{value / (1 << 20):.1f}M"
