"""An in-memory stand-in for cluster.store.Store with etcd's semantics for what the unit tests
use (revisions, guarded transactions, range reads in key order with a limit, counts, leases,
compaction), recording every transaction and range read so tests can assert how writes were
batched and guarded and how wide the reads were."""

from __future__ import annotations

import bisect

from lclusterd.cluster.kv import Absent, Compare, Delete, KeyValue, ModIs, Op, Put, TxnResult, ValueIs


class MemStore:
    def __init__(self) -> None:
        self.data: dict[str, KeyValue] = {}
        self.rev = 1
        self.txns: list[tuple[list[Compare], list[Op], bool]] = []
        self.leases: dict[int, int] = {}  # lease id -> ttl
        self.compacted: list[int] = []
        self.ranges: list[tuple[str, str, int]] = []
        self._sorted: list[str] | None = None  # the keys in order, for range reads (None: changed since)  # each get_range: start, end, keys etcd visits (in the range)

    def revision(self) -> int:
        return self.rev

    def get(self, key: str) -> KeyValue | None:
        return self.data.get(key)

    def get_many(self, keys: list[str]) -> list[KeyValue | None]:
        return [self.data.get(k) for k in keys]

    def get_prefix(self, prefix: str, keys_only: bool = False) -> tuple[list[KeyValue], int]:
        return [kv for k, kv in sorted(self.data.items()) if k.startswith(prefix)], self.rev

    def get_range(self, start: str, end: str, limit: int = 0, revision: int = 0, keys_only: bool = False
                  ) -> tuple[list[KeyValue], int]:
        if self._sorted is None:
            self._sorted = sorted(self.data)
        keys = self._sorted[bisect.bisect_left(self._sorted, start):bisect.bisect_left(self._sorted, end)]
        found = [self.data[k] for k in keys]
        self.ranges.append((start, end, len(found)))
        return (found[:limit] if limit else found), self.rev

    def counts(self, prefixes: list[str]) -> tuple[list[int], int]:
        return [sum(1 for k in self.data if k.startswith(p)) for p in prefixes], self.rev

    def _holds(self, c: Compare) -> bool:
        kv = self.data.get(c.key)
        if isinstance(c, ModIs):
            return (kv.mod_revision if kv else 0) == c.revision
        if isinstance(c, Absent):
            return kv is None
        assert isinstance(c, ValueIs)
        return kv is not None and kv.value == c.value

    def txn(self, compares: list[Compare], ops: list[Op], else_ops: list[Op] = ()) -> TxnResult:
        assert len(ops) <= 128 and len(compares) <= 128, "etcd refuses more than 128 operations per transaction"
        ok = all(self._holds(c) for c in compares)
        self.txns.append((list(compares), list(ops), ok))
        chosen = ops if ok else else_ops
        if chosen:
            self.rev += 1
            self._sorted = None
        for op in chosen:
            if isinstance(op, Put):
                old = self.data.get(op.key)
                self.data[op.key] = KeyValue(op.key, op.value, self.rev, old.create_revision if old else self.rev, op.lease)
            else:
                assert isinstance(op, Delete)
                self.data.pop(op.key, None)
        return TxnResult(ok, self.rev)

    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.txn([], [Put(key, value, lease)]).revision

    def grant(self, ttl: int) -> int:
        lease = len(self.leases) + 1
        self.leases[lease] = ttl
        return lease

    def compact(self, revision: int) -> bool:
        self.compacted.append(revision)
        return True
