"""Adaptive batching for the writers that batch etcd transactions (scheduler, worker).

Every etcd write transaction costs an fsync of etcd's log, which costs CPU as well as time
on a virtual machine (README, benchmarks). A writer that takes whatever is queued the moment it wakes sends many small
transactions under load. Linger makes it wait a moment first, but only while it is busy (its
last transaction went out a moment ago) and has less than a full batch waiting, so a lone job
on an idle node is not delayed at all, nor is a full batch.
"""

from __future__ import annotations

import threading
import time

LINGER_SECONDS = 0.002  # about one etcd round trip with its fsync here
BUSY_WINDOW_SECONDS = 0.05  # a writer that sent within this window is busy


class Linger:
    def __init__(self, batch: int, linger: float = LINGER_SECONDS, busy_window: float = BUSY_WINDOW_SECONDS,
                 clock=time.monotonic):
        self.batch = batch  # the most the writer takes at once
        self.linger = linger
        self.busy_window = busy_window
        self._clock = clock
        self._last_sent = float("-inf")

    def busy(self) -> bool:
        return self._clock() - self._last_sent < self.busy_window

    def before_batch(self, waiting: int, stopped: threading.Event | None = None) -> None:
        """Call before taking a batch, with how many items are waiting: waits `linger` seconds
        if busy and that is less than a batch (less if `stopped` is set)."""
        if waiting < self.batch and self.busy():
            if stopped is not None:
                stopped.wait(self.linger)
            else:
                time.sleep(self.linger)

    def sent(self) -> None:
        """Call after each transaction."""
        self._last_sent = self._clock()
