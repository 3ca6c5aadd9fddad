"""etcd access for the rest of lclusterd: get, transactions, leases, resumable watches (one
shared stream for everything under the daemon's prefix: WatchHub).

The ONLY module that imports etcd3. Every etcd or gRPC failure leaves this module as
StoreUnavailable (one sentence naming the endpoints), so callers handle one error type.
Callers describe transactions with the small Put/Delete/ModIs/Absent/ValueIs values below.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol
from urllib.parse import urlsplit

import etcd3
import etcd3.etcdrpc as etcdrpc
import etcd3.exceptions
import etcd3.utils
import grpc

from lclusterd.errors import StoreUnavailable

log = logging.getLogger(__name__)

# Reconnect quickly once etcd is back (gRPC's default backoff grows to two minutes).
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_http_proxy", 0),
]
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Event:
    kind: str  # "put" or "delete"
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class ModIs:
    """Compare: the key's mod revision equals `revision` (0 = the key does not exist)."""

    key: str
    revision: int


@dataclass(frozen=True)
class Absent:
    key: str


@dataclass(frozen=True)
class ValueIs:
    key: str
    value: bytes


Op = Put | Delete
Compare = ModIs | Absent | ValueIs


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store revision after the transaction (= mod revision of what it wrote)


# Transactions are built as etcd protobuf messages directly (here and in get_many):
# python-etcd3's builders (and its lease_to_id) cost more per job than the rest of a
# transaction's Python work.
def _compare_message(c: Compare) -> etcdrpc.Compare:
    if isinstance(c, ModIs):
        return etcdrpc.Compare(result=etcdrpc.Compare.EQUAL, target=etcdrpc.Compare.MOD, key=c.key.encode(),
                               mod_revision=c.revision)
    if isinstance(c, Absent):
        return etcdrpc.Compare(result=etcdrpc.Compare.EQUAL, target=etcdrpc.Compare.CREATE, key=c.key.encode(),
                               create_revision=0)
    return etcdrpc.Compare(result=etcdrpc.Compare.EQUAL, target=etcdrpc.Compare.VALUE, key=c.key.encode(), value=c.value)


def _op_message(op: Op) -> etcdrpc.RequestOp:
    if isinstance(op, Put):
        return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=op.key.encode(), value=op.value, lease=op.lease))
    return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=op.key.encode()))


def parse_endpoints(text: str | Iterable[str]) -> list[tuple[str, int]]:
    """`http://a:2379,b:2379` -> [("a", 2379), ("b", 2379)]; ValueError on a bad entry."""
    items = text.split(",") if isinstance(text, str) else list(text)
    result = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        parts = urlsplit(item if "://" in item else "http://" + item)
        if parts.scheme not in ("http", "") or not parts.hostname:
            raise ValueError(f"bad etcd endpoint {item!r}: expected http://HOST:PORT")
        result.append((parts.hostname, parts.port or 2379))
    if not result:
        raise ValueError("no etcd endpoint given")
    return result


_CONNECTION_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_CONNECTION_ERRORS = (etcd3.exceptions.ConnectionFailedError, etcd3.exceptions.ConnectionTimeoutError,
                      etcd3.exceptions.NoServerAvailableError)


def _mapped(method):
    """Turn every etcd/gRPC failure of `method` into StoreUnavailable. With several endpoints,
    a connection failure (member down, or a leader election that outlived the request) is
    retried on each member not yet tried by this call: python-etcd3 only fails over on the
    NEXT request, so without this every request in flight when one member of a healthy
    3-member cluster died failed (issue 4: "a 3-member etcd cluster keeps serving with one
    member down"). A retried write is safe: every transaction is guarded, and a guard that
    fails because the first try did land is handled like any lost race (the caller re-reads)."""

    @functools.wraps(method)
    def wrapper(self: Store, *args, **kwargs):
        self._unfail_if_all_failed()
        tried: set[str] = set()
        while True:
            try:
                return method(self, *args, **kwargs)
            except StoreUnavailable:
                raise
            except grpc.RpcError as exc:
                if exc.code() in _CONNECTION_CODES and self._fail_over(tried):
                    continue
                raise self._unavailable(f"{exc.code().name}: {exc.details()}") from None
            except (etcd3.exceptions.Etcd3Exception, ValueError) as exc:
                if isinstance(exc, _CONNECTION_ERRORS) and self._fail_over(tried):
                    continue
                raise self._unavailable(str(exc) or type(exc).__name__) from None

    return wrapper


class WatchHandler(Protocol):
    def on_events(self, events: list[Event]) -> None:
        """Called from the watch thread, in revision order."""

    def on_resync(self) -> int:
        """The watched history was compacted: re-read the state and return its revision."""


class Callbacks:
    """A WatchHandler made of two functions."""

    def __init__(self, on_events: Callable[[list[Event]], None], on_resync: Callable[[], int]):
        self.on_events = on_events
        self.on_resync = on_resync


class Store:
    """One etcd client shared by all of the daemon's threads (gRPC stubs are thread-safe)."""

    def __init__(self, endpoints: str | Iterable[str], timeout: float = 3.0):
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = timeout
        multi = len(self.endpoints) > 1
        self._client = etcd3.MultiEndpointEtcd3Client(
            endpoints=[
                # time_retry: how long a failed endpoint is skipped; 0 with one endpoint, so
                # requests succeed again as soon as etcd is back.
                etcd3.Endpoint(host, port, secure=False, time_retry=2.0 if multi else 0.0, opts=_CHANNEL_OPTIONS)
                for host, port in self.endpoints
            ],
            timeout=timeout,
            failover=multi,
        )
        self._hub: WatchHub | None = None

    def _fail_over(self, tried: set[str]) -> bool:
        """After a connection failure: mark the endpoint in use failed (python-etcd3 does so
        only for the calls it wraps, not for txn's raw stub call) and switch to a member this
        call has not tried yet, even one marked failed lately. False when none is left."""
        if len(self.endpoints) < 2:
            return False
        label = self._client._current_endpoint_label
        tried.add(label)
        self._client.endpoints[label].fail()
        untried = [name for name in self._client.endpoints if name not in tried]
        if not untried:
            return False
        self._client.endpoints[untried[0]].last_failed = 0
        self._client._current_endpoint_label = untried[0]  # (the setter drops the old stubs)
        return True

    def _unfail_if_all_failed(self) -> None:
        """With every endpoint marked failed, python-etcd3 refuses requests (NoServerAvailable)
        for time_retry seconds even once etcd is back; try them all again instead, so the daemon
        serves as soon as etcd returns (as with one endpoint)."""
        endpoints = list(self._client.endpoints.values())
        if all(e.is_failed() for e in endpoints):
            for e in endpoints:
                e.last_failed = 0

    def describe(self) -> str:
        return ",".join(f"http://{h}:{p}" for h, p in self.endpoints)

    def _unavailable(self, detail: str) -> StoreUnavailable:
        return StoreUnavailable(f"etcd at {self.describe()} is unavailable ({detail})")

    def close(self) -> None:
        if self._hub is not None:
            self._hub.stop()
        self._client.close()

    # -- reads -----------------------------------------------------------------------------
    @_mapped
    def get(self, key: str) -> KeyValue | None:
        response = self._client.get_response(key)
        return _kv(response.kvs[0]) if response.kvs else None

    @_mapped
    def get_prefix(self, prefix: str, keys_only: bool = False) -> tuple[list[KeyValue], int]:
        """Every key under `prefix` (sorted by key) and the revision the read saw."""
        response = self._client.get_prefix_response(prefix, keys_only=keys_only)
        return [_kv(kv) for kv in response.kvs], response.header.revision

    @_mapped
    def get_many(self, keys: list[str]) -> list[KeyValue | None]:
        """Each key's current value (None where there is none), in the order given: one read
        transaction per MAX_TXN_OPS keys instead of a round trip per key."""
        found: list[KeyValue | None] = []
        for start in range(0, len(keys), MAX_TXN_OPS):
            gets = [etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key.encode()))
                    for key in keys[start:start + MAX_TXN_OPS]]
            request = etcdrpc.TxnRequest(success=gets)
            response = self._client.kvstub.Txn(request, self.timeout)
            found.extend(_kv(r.response_range.kvs[0]) if r.response_range.kvs else None for r in response.responses)
        return found

    @_mapped
    def get_range(self, start: str, end: str, limit: int = 0) -> tuple[list[KeyValue], int]:
        """Keys in [start, end), sorted by key, at most `limit` (0: all), and the revision read."""
        request = etcdrpc.RangeRequest(key=start.encode(), range_end=end.encode(), limit=limit)
        response = self._client.kvstub.Range(request, self.timeout)
        return [_kv(kv) for kv in response.kvs], response.header.revision

    @_mapped
    def revision(self) -> int:
        """The store's current revision (a cheap health probe)."""
        return self._client.get_response("/", keys_only=True).header.revision

    # -- writes ----------------------------------------------------------------------------
    @_mapped
    def txn(self, compares: list[Compare], ops: list[Op], else_ops: list[Op] = ()) -> TxnResult:
        """One etcd transaction: `ops` if every compare holds, else `else_ops`."""
        request = etcdrpc.TxnRequest(compare=[_compare_message(c) for c in compares],
                                     success=[_op_message(o) for o in ops],
                                     failure=[_op_message(o) for o in else_ops])
        response = self._client.kvstub.Txn(request, self.timeout)
        return TxnResult(response.succeeded, response.header.revision)

    @_mapped
    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return self.txn([], [Put(key, value, lease)]).revision

    @_mapped
    def compact(self, revision: int) -> bool:
        """Drop the history before `revision` (reads and watches from an older revision then
        fail as compacted; etcd reuses the space). False if it was compacted that far already."""
        try:
            self._client.kvstub.Compact(etcdrpc.CompactionRequest(revision=revision), self.timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE and "compacted" in (exc.details() or ""):
                return False
            raise
        return True

    # -- leases ----------------------------------------------------------------------------
    @_mapped
    def grant(self, ttl: int) -> int:
        return self._client.lease(ttl).id

    @_mapped
    def keepalive(self, lease_id: int) -> int:
        """Refresh the lease once; returns its remaining TTL (0 or less: it has expired)."""
        for response in self._client.refresh_lease(lease_id):
            return response.TTL
        return 0

    @_mapped
    def revoke(self, lease_id: int) -> None:
        """Revoke a lease (deleting its keys); a lease that has already expired is fine."""
        try:
            self._client.revoke_lease(lease_id)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise

    # -- watches ---------------------------------------------------------------------------
    def watch(self, prefix: str, start_revision: int, handler: WatchHandler, name: str = "") -> Watch | SharedWatch:
        """Deliver every change under `prefix` from `start_revision` on, surviving disconnects.
        Under a prefix given to share_watches, this is a share of that one stream."""
        hub = self._hub
        if hub is not None and prefix.startswith(hub.prefix):
            return hub.add(prefix, start_revision, handler)
        watch = Watch(self, prefix, start_revision, handler, name or prefix)
        watch.start()
        return watch

    def share_watches(self, prefix: str) -> None:
        """From now on, watches under `prefix` share one etcd watch stream (see WatchHub)."""
        if self._hub is None:
            self._hub = WatchHub(self, prefix)
            self._hub.start()

    def _watch_stub(self):
        return etcdrpc.WatchStub(self._client.channel)


class Watch:
    """A watch on one prefix in its own thread; after a disconnect it resumes from the revision
    after the last event it delivered, so no change is missed or delivered twice."""

    def __init__(self, store: Store, prefix: str, start_revision: int, handler: WatchHandler, name: str):
        self._store = store
        self._prefix = prefix
        self._next = start_revision
        self._handler = handler
        self._stopped = threading.Event()
        self._call = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"watch {name}", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _requests(self, done: threading.Event):
        create = etcdrpc.WatchCreateRequest(
            key=etcd3.utils.to_bytes(self._prefix),
            range_end=etcd3.utils.prefix_range_end(etcd3.utils.to_bytes(self._prefix)),
            start_revision=self._next,
            progress_notify=True,
        )
        yield etcdrpc.WatchRequest(create_request=create)
        done.wait()  # keep the request side open while the stream lives

    def _run(self) -> None:
        backoff = 0.05
        while not self._stopped.is_set():
            done = threading.Event()
            try:
                with self._lock:
                    if self._stopped.is_set():
                        break
                    self._call = self._store._watch_stub().Watch(self._requests(done))
                for response in self._call:
                    if response.compact_revision:
                        log.warning("watch %s: history compacted at %d, re-reading", self._prefix, response.compact_revision)
                        self._next = self._handler.on_resync() + 1
                        break
                    if response.created:
                        self.connected.set()
                        backoff = 0.05
                    if response.canceled:
                        break
                    if response.events:
                        events = [_event(e) for e in response.events]
                        self._handler.on_events(events)
                        self._next = events[-1].mod_revision + 1
                    elif not response.created and response.header.revision >= self._next:
                        self._next = response.header.revision + 1
            except grpc.RpcError as exc:
                if not self._stopped.is_set():
                    log.debug("watch %s: %s; resuming from revision %d", self._prefix, exc.code().name, self._next)
            except (ValueError, etcd3.exceptions.Etcd3Exception, StoreUnavailable) as exc:
                log.debug("watch %s: %s", self._prefix, exc)
            except Exception:  # a handler bug must not end the watch for good
                log.exception("watch %s: handler failed", self._prefix)
            finally:
                done.set()
                self.connected.clear()
            self._stopped.wait(backoff)
            backoff = min(backoff * 2, 1.0)


class SharedWatch:
    """One handler's share of a WatchHub: the changes under `prefix` from `start` on."""

    def __init__(self, hub: WatchHub, prefix: str, start: int, handler: WatchHandler):
        self.prefix, self.start, self.handler = prefix, start, handler
        self._hub = hub

    def stop(self) -> None:
        self._hub.remove(self)


class WatchHub:
    """One etcd watch on a whole key prefix, dispatched to the handlers of its sub-prefixes.

    A daemon follows eight prefixes (jobs/, queue/, assign/, kill/, nodes/, ...); with a watch
    each, one job's transaction came back as up to four watch responses, each received by the
    channel's thread and handed to that watch's own thread. Shared, a transaction is one
    response, read and dispatched by one thread (etcd also encodes it once per daemon).

    Handlers are called on the hub's thread, in revision order, and must not block for long.
    A handler added with a start revision the stream has already passed (events it should
    have seen were delivered before it joined) is re-read first: its on_resync runs at once
    under the hub's lock, and it gets the events after the revision that read saw.
    """

    def __init__(self, store: Store, prefix: str):
        self.prefix = prefix
        self._store = store
        self._lock = threading.RLock()  # handlers may add or stop shares from the hub's thread
        self._shares: list[SharedWatch] = []
        self._delivered = 0  # the revision of the last event delivered
        self._watch: Watch | None = None

    def start(self) -> None:
        self._delivered = self._store.revision()
        self._watch = Watch(self._store, self.prefix, self._delivered + 1, self, "shared")
        self._watch.start()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def add(self, prefix: str, start_revision: int, handler: WatchHandler) -> SharedWatch:
        with self._lock:
            if start_revision <= self._delivered:
                start_revision = handler.on_resync() + 1
            share = SharedWatch(self, prefix, start_revision, handler)
            self._shares = [*self._shares, share]
            return share

    def remove(self, share: SharedWatch) -> None:
        with self._lock:
            self._shares = [s for s in self._shares if s is not share]

    def on_events(self, events: list[Event]) -> None:
        with self._lock:
            for share in self._shares:
                mine = [e for e in events if e.mod_revision >= share.start and e.key.startswith(share.prefix)]
                if mine:
                    try:
                        share.handler.on_events(mine)
                    except Exception:  # one handler's bug must not cost the others their events
                        log.exception("watch %s: handler failed", share.prefix)
            self._delivered = events[-1].mod_revision

    def on_resync(self) -> int:
        """The stream's history was compacted: every share re-reads; the stream resumes after
        the oldest of their reads and each share skips what its own read already covered."""
        with self._lock:
            oldest = self._store.revision()
            for share in self._shares:
                share.start = share.handler.on_resync() + 1
                oldest = min(oldest, share.start - 1)
            self._delivered = oldest
            return oldest


def _kv(kv) -> KeyValue:
    return KeyValue(kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision, kv.lease)


def _event(ev) -> Event:
    kind = "delete" if ev.type == 1 else "put"  # mvccpb.Event.DELETE
    return Event(kind, ev.kv.key.decode(), ev.kv.value, ev.kv.mod_revision, ev.kv.create_revision)

