"""Waited: what a Wait knows of the jobs it waits for (one job, or a pool's or an array's
members): each one's newest record and how many have not ended yet.

A record the jobs/ watch brings is only looked into for its state (json.loads, 5 us for a
member's record) until it has ended; it is decoded strictly (JobRecord.from_bytes with every
check, 31 us) once it is terminal or when the answer needs it. And the waiter looks only at
the jobs whose record changed (Subscription.touched), not at every member on every wake-up:
with a 2000-member array, re-checking and re-decoding every member each time the watch woke
the waiter was a fifth of the daemon's Python time (py-spy, README "bench/arrays.py").
"""

from __future__ import annotations

import json

from lclusterd.cluster import decode
from lclusterd.cluster.keys import Keys
from lclusterd.errors import RecordError
from lclusterd.model import TERMINAL, JobRecord


class Waited:
    def __init__(self, keys: Keys, ids: list[str]):
        self.ids = ids
        self._keys = keys
        self.revisions = [0] * len(ids)  # of the newest record known of each job
        self._records: list[JobRecord | None] = [None] * len(ids)
        self._pending: list[bytes | None] = [None] * len(ids)  # a newer record than _records[i], not decoded yet
        self._ended = [False] * len(ids)
        self.left = len(ids)  # jobs not ended

    def read(self, found: list[tuple[JobRecord, int]]) -> None:
        """The records and mod revisions read from etcd, in the order of `ids`."""
        for i, (record, revision) in enumerate(found):
            self._records[i], self._pending[i], self.revisions[i] = record, None, revision
            self._mark(i, record.terminal)

    def watched(self, i: int, seen: tuple[bytes | None, int]) -> bool:
        """Take up the record the watch brought for job i (a Subscription's `seen`, read once)
        if it is newer. False when etcd must be read: the watch has none (it never saw the job,
        or forgot it in a resync), or a terminal one is malformed (decode.py logs it)."""
        raw, revision = seen
        if raw is None:
            return False
        if revision <= self.revisions[i]:
            return True
        ended = _state(raw) in TERMINAL
        if ended:
            record = self._decoded(i, raw, revision)
            if record is None:
                return False
            self._records[i], self._pending[i] = record, None
        else:  # (a record whose state cannot be seen stays undecoded too: the answer's decode says what is wrong)
            self._pending[i] = raw
        self.revisions[i] = revision
        self._mark(i, ended)
        return True

    def records(self) -> list[JobRecord] | None:
        """Every job's newest record, decoded; None when one is malformed (then read etcd)."""
        for i, raw in enumerate(self._pending):
            if raw is not None:
                record = self._decoded(i, raw, self.revisions[i])
                if record is None:
                    return None
                self._records[i], self._pending[i] = record, None
        return self._records  # type: ignore[return-value]  (every slot is set once read or watched)

    def _decoded(self, i: int, raw: bytes, revision: int) -> JobRecord | None:
        try:
            return decode.job(self._keys.job(self.ids[i]), raw, revision)
        except RecordError:
            return None

    def _mark(self, i: int, ended: bool) -> None:
        if ended != self._ended[i]:
            self._ended[i] = ended
            self.left += -1 if ended else 1


def _state(raw: bytes) -> str:
    """The record's "state" as it says, without checking the rest; "" when it cannot be read."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return ""
    state = data.get("state") if isinstance(data, dict) else None
    return state if isinstance(state, str) else ""
