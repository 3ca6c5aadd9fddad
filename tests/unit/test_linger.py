"""Linger: a writer waits before taking a batch only while busy (it sent a moment ago) and
short of a full batch, so a lone job on an idle node is never delayed, nor is a full batch."""

from __future__ import annotations

import threading

from lclusterd.cluster.linger import Linger


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout=None) -> bool:
        self.waits.append(timeout)
        return False


def test_an_idle_writer_does_not_wait_a_busy_one_does_until_the_window_passes():
    clock, stopped = Clock(), RecordingEvent()
    linger = Linger(batch=32, linger=0.002, busy_window=0.05, clock=clock)
    linger.before_batch(1, stopped)
    assert stopped.waits == []  # never sent: idle
    linger.sent()
    clock.now += 0.01
    linger.before_batch(1, stopped)
    assert stopped.waits == [0.002]
    clock.now += 0.05
    linger.before_batch(1, stopped)
    assert stopped.waits == [0.002]  # nothing sent for a while: idle again


def test_a_busy_writer_with_a_full_batch_waiting_does_not_wait():
    clock, stopped = Clock(), RecordingEvent()
    linger = Linger(batch=32, linger=0.002, busy_window=0.05, clock=clock)
    linger.sent()
    linger.before_batch(32, stopped)
    assert stopped.waits == []
    linger.before_batch(31, stopped)
    assert stopped.waits == [0.002]
