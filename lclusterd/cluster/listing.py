"""-list: the newest jobs, read from the listed/ index (keys.py) instead of the whole of jobs/.

The order. -list shows jobs oldest first by when they were added: created_at (which it shows)
in whole microseconds, then the array index (0 for a job of no array), then the id; so the jobs
of one add (a batch, a pool, an array) stand together, an array's by index. `order` is that
order, and listed/ holds one key per job in exactly its reverse, so a range read in key order
with a limit gives the newest jobs: etcd serves key order from its index, while a range
sorted by anything else (creation revision, as before) costs a read of the whole prefix. Each
node stamps created_at from its own clock, strictly increasing within the node (AddClock):
"newest" is newest by the adding node's clock, so two adds on nodes whose clocks differ by d
and that came less than d apart may list in the other order than they reached etcd.

Reading. IndexCursor reads listed/ newest first in windows of creation time, so each etcd
range spans few keys (etcd 3.4 visits every key of a range to count it, whatever the limit).
Every key is input: it must parse, its record must exist and decode (decode.py), and it must
be the key that record's created_at, array index and id give; anything else is skipped (and
logged once), so a key someone else wrote can neither add a job to the list, move one, nor
list it twice. A key whose record is gone (retention removed both meanwhile) is skipped. The
key's value is the job's owner: a user's listing fetches only the records of keys that name
them (the record's owner still decides). Unless expanded, an array is one row, its state
summed from its members' (model.pool_outcome): its members are the keys of its creation
microsecond, read as one narrow range when the first of them comes up. Filters drop records
(owner) and rows (state); reading goes on until `limit` rows pass or the index ends.

Until the prime has indexed every record (the listed-complete key, listindex.py), and for a
listing without a limit, -list reads the whole of jobs/ in pages and sorts it the same way.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Union

from lclusterd.cluster import decode
from lclusterd.cluster.keys import LISTED_INDEX_MAX, Keys, stamp_us
from lclusterd.cluster.kv import KeyValue, Put
from lclusterd.cluster.store import Store
from lclusterd.errors import RecordError
from lclusterd.model import JobRecord, pool_outcome

Row = Union[JobRecord, list[JobRecord]]  # a job, or an array's members (by index) as one row

FIRST_WINDOW_US = 1_000_000  # the first read: jobs added in the last second (and any stamped later)
WINDOW_GROWTH = 8  # at most this many times longer each next window
MAX_PAGE = 256  # index keys per read
FULL_PAGE = 1000  # records per read of the whole of jobs/ (about 1 MB)


def order(record: JobRecord) -> tuple[int, int, str]:
    """-list's order, oldest first: the reverse of the record's listed/ key's."""
    return stamp_us(record.created_at or 0.0), min(max(record.array_index or 0, 0), LISTED_INDEX_MAX), record.id


def index_put(keys: Keys, record: JobRecord) -> Put:
    """The listed/ key of a new record, written in the record's first transaction."""
    return Put(index_key(keys, record), record.owner.encode(errors="surrogateescape"))


def index_key(keys: Keys, record: JobRecord) -> str:
    return keys.listed(record.created_at or 0.0, record.array_index, record.id)


def row_state(row: Row) -> str:
    return row.state if isinstance(row, JobRecord) else pool_outcome(row)[0]


def fold(records: list[JobRecord], states: set[str] | None, limit: int, expand: bool = False) -> list[Row]:
    """-list's rows from records in its order: a job each, and an array folded into one row at
    its first member's place unless `expand`; then only rows in `states` (when given), the
    newest `limit` (when > 0)."""
    rows: list[Row] = []
    arrays: dict[str, list[JobRecord]] = {}
    for record in records:
        if expand or record.array_index is None:
            rows.append(record)
            continue
        members = arrays.get(record.pool)
        if members is None:
            members = arrays[record.pool] = []
            rows.append(members)
        members.append(record)
    for members in arrays.values():
        members.sort(key=lambda m: m.array_index)
    shown = [row for row in rows if not states or row_state(row) in states]
    return shown[-limit:] if limit > 0 else shown


class AddClock:
    """created_at for new jobs: the wall clock in whole microseconds, strictly increasing in this
    process, so two adds here never tie and a clock stepped back never lists a later add first."""

    def __init__(self, clock: Callable[[], int] = time.time_ns):
        self._clock = clock
        self.last_us = 0  # the newest add here (a landmark for the listing's windows)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.last_us = max(self._clock() // 1000, self.last_us + 1)
            return self.last_us / 1_000_000


class IndexCursor:
    """listed/ keys newest first, a page at a time. Each read is one range over a window of
    creation times, the windows one after the other (no key is missed): the first from now back
    FIRST_WINDOW_US (and everything stamped later); after a window that held no key, one
    WINDOW_GROWTH times longer; after one that held fewer than asked, one long enough for the rest
    at the rate it held them (within twice and WINDOW_GROWTH times its length); after a full page,
    one as long as that page spanned. A `landmark`, the time of a job known to exist (the newest
    this node added or listed), cuts the window that would reach past it a second beyond it, and
    the windows start small again from there: a quiet spell costs a few empty reads, not a window
    over the busy stretch before it. A read costs its window's keys (etcd visits each to count
    it), so a burst of adds in one window, or a dense stretch behind a quiet spell this node did
    not see, still costs a read of many keys."""

    def __init__(self, store: Store, keys: Keys, now_us: int, landmark_us: int = 0):
        self.store, self.keys = store, keys
        self._start = keys.listed_prefix
        self._end_of_index = prefix_end(keys.listed_prefix)
        self._newest, self._span = now_us, FIRST_WINDOW_US
        self._landmark = landmark_us if 0 < landmark_us < now_us - 2 * FIRST_WINDOW_US else 0
        self._done = False

    def next(self, want: int) -> list[KeyValue]:
        """Up to `want` keys after the last returned, newest first; [] once the index is read."""
        while not self._done:
            oldest, cut = self._newest - self._span, False
            if self._landmark and oldest <= self._landmark - FIRST_WINDOW_US:
                oldest, cut, self._landmark = self._landmark - FIRST_WINDOW_US, True, 0
            end = self.keys.listed_newer_than(oldest) if oldest > 0 else self._end_of_index
            kvs, _ = self.store.get_range(self._start, end, want)
            if len(kvs) == want:  # the window may hold more: go on after the last key read
                self._start = kvs[-1].key + "\0"
                self._narrow(kvs)
                return kvs
            span = FIRST_WINDOW_US if cut else self._span
            growth = min(max(1.5 * (want - len(kvs)) / len(kvs), 2), WINDOW_GROWTH) if kvs else WINDOW_GROWTH
            self._start, self._newest, self._span = end, oldest, int(span * growth)
            self._done = oldest <= 0
            if kvs:
                return kvs
        return []

    def _narrow(self, kvs: list[KeyValue]) -> None:
        """After a full page: the next window as long as this page's span (at least the rest of
        its last key's microsecond), from that key on."""
        stamps = []
        for kv in (kvs[0], kvs[-1]):
            try:
                stamps.append(self.keys.listed_parts(kv.key)[0])
            except ValueError:  # (a key someone else wrote: keep the window as it is)
                return
        self._newest, self._span = stamps[1], max(stamps[0] - stamps[1], 1)
        self._landmark = self._landmark if self._landmark < self._newest - FIRST_WINDOW_US else 0


def prefix_end(prefix: str) -> str:
    """The end of the range of keys under `prefix` (its last character's successor)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Listing:
    """-list's reads (see the module docstring). Thread-safe: what it keeps between calls is a
    landmark for the windows (IndexCursor), the newest job it has listed or `added` has stamped."""

    def __init__(self, store: Store, keys: Keys, clock: Callable[[], float] = time.time, added: AddClock | None = None):
        self.store, self.keys = store, keys
        self._clock, self._added = clock, added
        self._seen_us = 0

    def newest(self, states: set[str] | None, limit: int, owner: str | None, expand: bool) -> list[Row] | None:
        """The newest `limit` rows (jobs; arrays folded unless `expand`) of `owner` (None: anyone's)
        in `states` (empty: any), oldest first, from the index; None while it is not complete."""
        if self.store.get(self.keys.listed_complete) is None:
            return None
        landmark = max(self._seen_us, self._added.last_us if self._added is not None else 0)
        cursor = IndexCursor(self.store, self.keys, stamp_us(self._clock()), landmark)
        rows: list[Row] = []
        folded: set[str] = set()  # arrays already made rows
        while len(rows) < limit:
            read = cursor.next(MAX_PAGE if owner is not None else min(max(limit - len(rows), 8), MAX_PAGE))
            if not read:
                break
            page = [kv for kv in read if _hinted(kv, owner)]
            while page and len(rows) < limit:
                chunk, page = page[:limit - len(rows)], page[limit - len(rows):]
                for record in self._records(chunk, owner):
                    row: Row = record
                    if not expand and record.array_index is not None:
                        if record.pool in folded:
                            continue
                        folded.add(record.pool)
                        row = self._array(record, owner)
                    if (not states or row_state(row) in states) and len(rows) < limit:
                        rows.append(row)
        rows.reverse()
        return rows

    def _records(self, kvs: list[KeyValue], owner: str | None) -> list[JobRecord]:
        """The records the index keys `kvs` name, in their order: only those whose key is the one
        their record gives (see the module docstring) and, with `owner`, that are theirs."""
        named = []
        for kv in kvs:
            try:
                named.append((kv, self.keys.listed_parts(kv.key)[2]))
            except ValueError as error:
                decode.skipped(kv.key, kv.mod_revision, RecordError(str(error)))
        found = self.store.get_many([self.keys.job(job_id) for _, job_id in named]) if named else []
        records = []
        for (kv, job_id), record_kv in zip(named, found):
            if record_kv is None:  # removed meanwhile (or a key without its record: listindex.py removes it)
                continue
            try:
                record = decode.job_kv(record_kv)
            except RecordError:
                continue
            if index_key(self.keys, record) != kv.key:
                decode.skipped(kv.key, kv.mod_revision, RecordError(f"it is not the index key of job {job_id}'s record"))
            else:
                self._seen_us = max(self._seen_us, stamp_us(record.created_at or 0.0))
                if owner is None or record.owner == owner:
                    records.append(record)
        return records

    def _array(self, member: JobRecord, owner: str | None) -> list[JobRecord]:
        """The members of `member`'s array, by index: the records of its creation microsecond's
        keys that name the array."""
        group = self.keys.listed_group(stamp_us(member.created_at or 0.0))
        kvs, _ = self.store.get_range(group, prefix_end(group))
        members = [r for r in self._records([kv for kv in kvs if _hinted(kv, owner)], owner)
                   if r.pool == member.pool and r.array_index is not None]
        members.sort(key=lambda m: m.array_index)
        return members or [member]

    def everything(self, owner: str | None) -> list[JobRecord]:
        """Every valid record (of `owner`, when given) in -list's order: jobs/ read in pages of
        FULL_PAGE at one revision (one read of a long history outgrows etcd's answer)."""
        prefix = self.keys.jobs_prefix
        start, end, revision = prefix, prefix_end(prefix), 0
        records: list[JobRecord] = []
        while True:
            kvs, revision = self.store.get_range(start, end, FULL_PAGE, revision)
            records += [r for r, _ in decode.jobs_of(kvs) if owner is None or r.owner == owner]
            if len(kvs) < FULL_PAGE:
                break
            start = kvs[-1].key + "\0"
        records.sort(key=order)
        return records


def _hinted(kv: KeyValue, owner: str | None) -> bool:
    """Whether the index key's value (its job's owner) lets `owner`'s listing read the record."""
    return owner is None or kv.value == owner.encode(errors="surrogateescape")
