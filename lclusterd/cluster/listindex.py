"""-list's index kept whole: the prime gives every job record its listed/ key (keys.py,
listing.py) and removes keys that have no record.

Every writer of a new record writes its key in the same transaction, and retention deletes
the key with the record. This pass is for the records that got none: those written before
this version (an upgrade), by a node of an older version sharing the etcd, or by hand; and
for keys left without a record (a record deleted by hand, or removed by an older version's
retention), or that do not parse.

On election and then every `interval` (retention's) while it is the prime, a pass counts jobs/ and listed/
in one request (etcd counts from its in-memory index without reading a value: about 25 ms per
100,000 keys on the project VM). While listed-complete is absent, or when the two counts
differ (and differ otherwise than right after the last repair: a jobs/ value that is not a
valid record never gets a key), it repairs: both prefixes read keys only, then the key of
every record that has none written from its record (guarded by the record's mod revision, so
a record removed meanwhile never gets a key without it), and keys deleted that do not parse,
whose record is gone (guarded: still gone) or that are not their record's (a second key for
one job); each transaction also under the prime guard, like retention's. Once a pass has done
all it meant to (no record changed under it), it writes listed-complete, which -list reads
before it trusts the index.

Why the prime fills the index in rather than -list looking for records without a key: that
look is the whole-prefix read the index is there to avoid, while a count of both prefixes
tells in milliseconds whether there is anything to do. The price: a record written without a
key after listed-complete (an older node's add, a record written by hand) is missing from
-list -limit until the next pass, at most `interval` later; -list without a limit, -check and
the rest see it at once. Until the first pass after an upgrade, -list reads all of jobs/.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Iterable, Iterator

from lclusterd.cluster import decode
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import MAX_TXN_OPS, Absent, Compare, Delete, ModIs, Op, Put
from lclusterd.cluster.listing import index_put
from lclusterd.cluster.retention import Loop, Retention, interval_for
from lclusterd.cluster.store import Store
from lclusterd.errors import RecordError
from lclusterd.records import JOB_ID

log = logging.getLogger(__name__)

FIXES_PER_TXN = MAX_TXN_OPS - 1  # one compare each at most, beside the prime guard
READ_CHUNK = 1000  # records read (and decoded) at once for the keys to write

Fix = tuple[Compare | None, Op]


def history_duties(store: Store, keys: Keys, keep: float) -> tuple[Retention, ListedIndex]:
    """The prime's upkeep of the job history, each a duty (start(prime_revision), stop()):
    retention, and this index, checked as often as retention runs."""
    return Retention(store, keys, keep), ListedIndex(store, keys, interval_for(keep))


class ListedIndex:
    """The prime's upkeep of listed/: start(prime_revision) on election, stop() when deposed."""

    def __init__(self, store: Store, keys: Keys, interval: float):
        self.store, self.keys = store, keys
        self._prime_revision = 0
        self._settled: int | None = None  # jobs/ count less listed/ count right after a whole repair
        self._loop = Loop("list index", interval, self.run_pass)

    def start(self, prime_revision: int) -> None:
        self._prime_revision, self._settled = prime_revision, None
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _guard(self) -> list[Compare]:
        return [ModIs(self.keys.prime, self._prime_revision)]

    def run_pass(self, stopped: threading.Event | None = None) -> int:
        """Check the index and repair it if needed (the module docstring). How many keys were
        written or deleted; -1 when the prime key is no longer ours (nothing more is written)."""
        complete = self.store.get(self.keys.listed_complete) is not None
        (jobs, listed), _ = self.store.counts([self.keys.jobs_prefix, self.keys.listed_prefix])
        if complete and jobs - listed in (0, self._settled):
            return 0
        done, whole = self._apply(self._fixes(), stopped)
        if done < 0:
            log.warning("list index: the prime key is no longer ours; writing nothing more")
            return done
        if not complete and whole:
            if not self.store.txn(self._guard(), [Put(self.keys.listed_complete, b"1")]).succeeded:
                return -1
            log.info("list index: every job record is indexed (%d key(s) written or removed)", done)
        elif done:
            log.info("list index: %d key(s) written or removed", done)
        (jobs, listed), _ = self.store.counts([self.keys.jobs_prefix, self.keys.listed_prefix])
        self._settled = jobs - listed if whole else None
        return done

    def _fixes(self) -> Iterator[Fix]:
        """What makes listed/ one key per valid record, and nothing else (the module docstring),
        as it is found: the records are read a chunk at a time, not held all at once. listed/ is
        read before jobs/, so a job added in between (key and record) is never taken for a key
        without its record."""
        indexed: dict[str, list[str]] = {}
        indexed_kvs, _ = self.store.get_prefix(self.keys.listed_prefix, keys_only=True)
        for kv in indexed_kvs:
            try:
                indexed.setdefault(self.keys.listed_parts(kv.key)[2], []).append(kv.key)
            except ValueError:
                yield None, Delete(kv.key)
        del indexed_kvs
        job_kvs, _ = self.store.get_prefix(self.keys.jobs_prefix, keys_only=True)
        ids = {job_id for job_id in (Keys.last(kv.key) for kv in job_kvs) if JOB_ID.match(job_id)}
        del job_kvs
        for job_id, keys in indexed.items():
            if job_id not in ids:  # its record is gone
                yield from ((Absent(self.keys.job(job_id)), Delete(key)) for key in keys)
        yield from self._from_records(sorted(i for i in ids if len(indexed.get(i, ())) != 1), indexed)

    def _from_records(self, ids: list[str], indexed: dict[str, list[str]]) -> Iterator[Fix]:
        """For jobs with no key or several: the key their record gives, the others deleted."""
        for start in range(0, len(ids), READ_CHUNK):
            chunk = ids[start:start + READ_CHUNK]
            for job_id, kv in zip(chunk, self.store.get_many([self.keys.job(i) for i in chunk])):
                if kv is None:  # removed meanwhile
                    continue
                try:
                    put = index_put(self.keys, decode.job_kv(kv))
                except RecordError:  # (logged) never listed: no key
                    continue
                have = indexed.get(job_id, [])
                if put.key not in have:
                    yield ModIs(kv.key, kv.mod_revision), put
                yield from ((None, Delete(key)) for key in have if key != put.key)

    def _apply(self, fixes: Iterable[Fix], stopped: threading.Event | None) -> tuple[int, bool]:
        """Send `fixes` in transactions under the prime guard; a batch whose guard fails is sent
        again one fix at a time (one changed meanwhile is left for the next pass). How many were
        applied (-1: the prime key is not ours) and whether all were."""
        done, whole = 0, True
        fixes = iter(fixes)
        while batch := list(itertools.islice(fixes, FIXES_PER_TXN)):
            if stopped is not None and stopped.is_set():
                return done, False
            if self._send(batch):
                done += len(batch)
                continue
            if not self._still_prime():
                return -1, False
            for fix in batch:
                if self._send([fix]):
                    done += 1
                else:
                    whole = False
        return done, whole

    def _send(self, fixes: list[Fix]) -> bool:
        compares = self._guard() + [compare for compare, _ in fixes if compare is not None]
        return self.store.txn(compares, [op for _, op in fixes]).succeeded

    def _still_prime(self) -> bool:
        kv = self.store.get(self.keys.prime)
        return kv is not None and kv.mod_revision == self._prime_revision
