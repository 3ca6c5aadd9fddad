"""Parsing of -mem, -cpus, -pids, -timeout values. Pure. Sizes and durations are
parsed by lclusterd.units, the one parser the runtime CLI uses as well."""

from __future__ import annotations

import math

from lclusterd.units import parse_duration, parse_size

__all__ = ["format_size", "parse_array", "parse_count", "parse_cpus", "parse_duration", "parse_memory", "parse_size"]

def parse_cpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of cores like 0.5 or 2") from None
    if not value > 0 or not math.isfinite(value):
        raise ValueError("the number of cores must be positive")
    return value


INT32_MAX = 2**31 - 1  # the API's counts are 32-bit
INT64_MAX = 2**63 - 1


def parse_count(text: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value < minimum:
        raise ValueError(f"must be at least {minimum}")
    if value > INT32_MAX:
        raise ValueError(f"must be at most {INT32_MAX}")
    return value


def parse_memory(text: str) -> int:
    """A -mem size; the API carries it as a 64-bit count of bytes."""
    value = parse_size(text)
    if value > INT64_MAX:
        raise ValueError("that is more bytes than the API can carry")
    return value


_UNITS = (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10))


def format_size(value: int) -> str:
    """64M, 1G: a whole number of a unit as -mem takes it; else one decimal of the largest
    unit it reaches (21.6G, 1.5K), so a node's default --memory reads as memory does."""
    for unit, factor in _UNITS:
        if value >= factor and value % factor == 0:
            return f"{value // factor}{unit}"
    for unit, factor in _UNITS:
        if value >= factor:
            return f"{value / factor:.1f}{unit}"
    return f"{value}B"


MAX_ARRAY_MEMBERS = 10_000  # lclusterd.limits.MAX_ARRAY_MEMBERS (tests/unit/test_arrays_units.py holds them equal)


def parse_array(text: str) -> tuple[int, int, int]:
    """An -array value: N (indexes 0..N-1), A-B (A..B, inclusive), either with %K (at most K
    members assigned or running at once); (first, last, K or 0)."""
    body, percent, limit = text.strip().partition("%")
    max_running = 0
    if percent:
        try:
            max_running = parse_count(limit, 1)
        except ValueError as exc:
            raise ValueError(f"%K (most members at once) {exc}") from None
    first_text, dash, last_text = body.partition("-")
    if dash and first_text:
        first, last = parse_count(first_text, 0), parse_count(last_text, 0)
        if last < first:
            raise ValueError(f"the range is reversed ({first} is above {last})")
    else:  # (a leading '-' is a negative count, refused as such)
        first, last = 0, parse_count(body, 1) - 1
    if last - first + 1 > MAX_ARRAY_MEMBERS:
        raise ValueError(f"{last - first + 1} members is more than the limit of {MAX_ARRAY_MEMBERS}")
    return first, last, max_running
