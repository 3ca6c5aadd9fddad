"""Polling for a state a unit test's threads reach on their own (no timing assertion: the
bound is generous and only ends a test that would otherwise hang)."""

import time


def until(predicate, what: str, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
