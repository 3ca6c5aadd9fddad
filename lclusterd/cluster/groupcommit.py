"""Group commit: independent guarded writes from concurrent callers share etcd transactions.

When many clients add jobs at once, each Add would be its own transaction; here the first
caller becomes the *leader* and writes every request queued by then in one transaction,
while the others wait for their result (they would have waited for their own round trip
anyway). The leader then hands the lead to the oldest request still queued, so no caller
serves others for long. No thread of its own, no timer: alone, a write goes out at once.

Requests are independent: the combined transaction holds every request's compares and ops.
If any compare fails, each request of that batch is retried alone, so one request's guard
never decides another's fate.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from lclusterd.cluster.kv import MAX_TXN_BYTES, MAX_TXN_OPS, Compare, Op, TxnResult, txn_bytes
from lclusterd.cluster.store import Store


@dataclass(eq=False)
class _Request:
    compares: list[Compare]
    ops: list[Op]
    size: int = 0  # bytes of keys and values
    woken: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to lead, not with a result
    result: TxnResult | None = None
    error: BaseException | None = None


class GroupCommit:
    def __init__(self, store: Store, max_ops: int = MAX_TXN_OPS, max_bytes: int = MAX_TXN_BYTES):
        self.store = store
        self.max_ops = max_ops
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._queue: deque[_Request] = deque()
        self._busy = False  # a leader is writing

    def txn(self, compares: list[Compare], ops: list[Op]) -> TxnResult:
        """Like Store.txn (without else ops): raises what Store.txn raises."""
        size = txn_bytes(compares, ops)
        if len(compares) > self.max_ops or len(ops) > self.max_ops or size > self.max_bytes:
            return self.store.txn(compares, ops)
        request = _Request(list(compares), list(ops), size)
        with self._lock:
            self._queue.append(request)
            lead = not self._busy
            self._busy = True
        if not lead:
            request.woken.wait()
            if not request.lead:
                return _outcome(request)
        self._lead()
        return _outcome(request)

    def _lead(self) -> None:
        """Write one batch (the oldest requests, this leader's among them), then pass the lead."""
        with self._lock:
            batch, compares, ops, size = [], 0, 0, 0
            while self._queue:
                nxt = self._queue[0]
                if batch and (compares + len(nxt.compares) > self.max_ops or ops + len(nxt.ops) > self.max_ops
                              or size + nxt.size > self.max_bytes):
                    break
                batch.append(self._queue.popleft())
                compares += len(nxt.compares)
                ops += len(nxt.ops)
                size += nxt.size
        try:
            self._write(batch)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.woken.set()
                else:
                    self._busy = False
            for request in batch:
                request.woken.set()

    def _write(self, batch: list[_Request]) -> None:
        try:
            if len(batch) == 1:
                batch[0].result = self.store.txn(batch[0].compares, batch[0].ops)
                return
            combined = self.store.txn([c for r in batch for c in r.compares], [o for r in batch for o in r.ops])
            if combined.succeeded:
                for request in batch:
                    request.result = combined
                return
            for request in batch:  # some guard failed: each on its own
                try:
                    request.result = self.store.txn(request.compares, request.ops)
                except BaseException as error:  # noqa: BLE001 - handed to its caller
                    request.error = error
        except BaseException as error:  # noqa: BLE001 - every caller of the batch gets it
            for request in batch:
                if request.result is None and request.error is None:
                    request.error = error


def _outcome(request: _Request) -> TxnResult:
    if request.error is not None:
        raise request.error
    assert request.result is not None
    return request.result
