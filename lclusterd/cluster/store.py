"""etcd access for the rest of lclusterd: reads, transactions, leases, compaction, and raw
watch streams (watch.py makes them resumable and shared).

Speaks plain http or, given a StoreTls, TLS with a client certificate (the embedded etcd
takes nothing else). The ONLY module that imports etcd3. Every etcd or gRPC failure leaves
this module as StoreUnavailable (one sentence naming the endpoints), so callers handle one
error type; anything else is a bug and goes up as it is. Callers describe transactions with
the values of kv.py.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import urlsplit

import etcd3
import etcd3.etcdrpc as etcdrpc
import etcd3.exceptions
import etcd3.utils
import grpc

from lclusterd import metrics
from lclusterd.cluster.kv import (MAX_TXN_OPS, Absent, Compare, Event, KeyValue, ModIs, Op, Put,
                                  TxnResult)
from lclusterd.errors import StoreUnavailable

__all__ = ["Store", "StoreTls", "WatchResponse", "WatchStream", "parse_endpoints"]

log = logging.getLogger(__name__)

# Reconnect quickly once etcd is back (gRPC's default backoff grows to two minutes).
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_http_proxy", 0),
]
# Transactions are built as etcd protobuf messages directly (here and in get_many):
# python-etcd3's builders (and its lease_to_id) cost more per job than the rest of a
# transaction's Python work.
def _compare_message(c: Compare) -> etcdrpc.Compare:
    if isinstance(c, ModIs):
        return etcdrpc.Compare(result=etcdrpc.Compare.EQUAL, target=etcdrpc.Compare.MOD, key=_raw(c.key),
                               mod_revision=c.revision)
    if isinstance(c, Absent):
        return etcdrpc.Compare(result=etcdrpc.Compare.EQUAL, target=etcdrpc.Compare.CREATE, key=_raw(c.key),
                               create_revision=0)
    return etcdrpc.Compare(result=etcdrpc.Compare.EQUAL, target=etcdrpc.Compare.VALUE, key=_raw(c.key), value=c.value)


def _op_message(op: Op) -> etcdrpc.RequestOp:
    if isinstance(op, Put):
        return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=_raw(op.key), value=op.value, lease=op.lease))
    return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=_raw(op.key)))


def parse_endpoints(text: str | Iterable[str], secure: bool = False) -> list[tuple[str, int]]:
    """`http://a:2379,b:2379` -> [("a", 2379), ("b", 2379)]; ValueError on a bad entry. With
    `secure` (TLS), endpoints are https:// ones (or bare HOST:PORT), else http:// (or bare)."""
    scheme = "https" if secure else "http"
    items = text.split(",") if isinstance(text, str) else list(text)
    result = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        parts = urlsplit(item if "://" in item else f"{scheme}://{item}")
        if parts.scheme != scheme or not parts.hostname:
            raise ValueError(f"bad etcd endpoint {item!r}: expected {scheme}://HOST:PORT"
                             + (" (TLS is on)" if secure else " (https needs the etcd TLS options)"))
        result.append((parts.hostname, parts.port or 2379))
    if not result:
        raise ValueError("no etcd endpoint given")
    return result


@dataclass(frozen=True)
class StoreTls:
    """TLS to etcd: the CA (PEM) etcd's certificate must chain to, and the client certificate
    and key (PEM) to present, if etcd asks for one."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def read(cls, cacert: str, cert: str = "", key: str = "") -> StoreTls:
        """From files; ValueError naming the file that cannot be read."""
        def load(path: str) -> bytes | None:
            if not path:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as exc:
                raise ValueError(f"cannot read {path}: {exc.strerror}") from None
        return cls(load(cacert), load(cert), load(key))

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                            certificate_chain=self.cert)


_CONNECTION_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_CONNECTION_ERRORS = (etcd3.exceptions.ConnectionFailedError, etcd3.exceptions.ConnectionTimeoutError,
                      etcd3.exceptions.NoServerAvailableError)


def _mapped(method):
    """Turn every etcd/gRPC failure of `method` into StoreUnavailable. With several endpoints,
    a connection failure (member down, or a leader election that outlived the request) is
    retried on each member not yet tried by this call: python-etcd3 only fails over on the
    NEXT request, so without this every request in flight when one member of a healthy
    3-member cluster died would fail. A retried write is safe: every transaction is guarded,
    and a guard that fails because the first try did land is handled like any lost race (the
    caller re-reads)."""

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
            except etcd3.exceptions.Etcd3Exception as exc:
                if isinstance(exc, _CONNECTION_ERRORS) and self._fail_over(tried):
                    continue
                raise self._unavailable(str(exc) or type(exc).__name__) from None

    return wrapper


class Store:
    """One etcd client shared by all of the daemon's threads (gRPC stubs are thread-safe)."""

    def __init__(self, endpoints: str | Iterable[str], timeout: float = 3.0, tls: StoreTls | None = None):
        self.endpoints = parse_endpoints(endpoints, secure=tls is not None)
        self.timeout = timeout
        self.scheme = "https" if tls else "http"
        multi = len(self.endpoints) > 1
        credentials = tls.credentials() if tls else None
        self._client = etcd3.MultiEndpointEtcd3Client(
            endpoints=[
                # time_retry: how long a failed endpoint is skipped; 0 with one endpoint, so
                # requests succeed again as soon as etcd is back.
                etcd3.Endpoint(host, port, secure=tls is not None, creds=credentials, time_retry=2.0 if multi else 0.0,
                               opts=_CHANNEL_OPTIONS)
                for host, port in self.endpoints
            ],
            timeout=timeout,
            failover=multi,
        )

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
        return ",".join(f"{self.scheme}://{h}:{p}" for h, p in self.endpoints)

    def _unavailable(self, detail: str) -> StoreUnavailable:
        return StoreUnavailable(f"etcd at {self.describe()} is unavailable ({detail})")

    def close(self) -> None:
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
            gets = [etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=_raw(key)))
                    for key in keys[start:start + MAX_TXN_OPS]]
            request = etcdrpc.TxnRequest(success=gets)
            response = self._client.kvstub.Txn(request, self.timeout)
            found.extend(_kv(r.response_range.kvs[0]) if r.response_range.kvs else None for r in response.responses)
        return found

    @_mapped
    def get_range(self, start: str, end: str, limit: int = 0, revision: int = 0, keys_only: bool = False
                  ) -> tuple[list[KeyValue], int]:
        """Keys in [start, end), sorted by key, at most `limit` (0: all), as of `revision` (0:
        now), and the revision read. (etcd 3.4 visits every key of the range to count it, whatever
        the limit: a narrow range is cheaper than a wide one with a small limit.)"""
        request = etcdrpc.RangeRequest(key=_raw(start), range_end=_raw(end), limit=limit, revision=revision,
                                       keys_only=keys_only)
        response = self._client.kvstub.Range(request, self.timeout)
        return [_kv(kv) for kv in response.kvs], response.header.revision

    @_mapped
    def counts(self, prefixes: list[str]) -> tuple[list[int], int]:
        """How many keys are under each prefix, all at one revision, and that revision. etcd
        counts from its in-memory index, without reading a value (yet it visits every key)."""
        ranges = [etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=key, range_end=etcd3.utils.prefix_range_end(key),
                                                                       count_only=True))
                  for key in map(_raw, prefixes)]
        response = self._client.kvstub.Txn(etcdrpc.TxnRequest(success=ranges), self.timeout)
        return [r.response_range.count for r in response.responses], response.header.revision

    @_mapped
    def revision(self) -> int:
        """The store's current revision (a cheap health probe)."""
        return self._client.get_response("/", keys_only=True).header.revision

    # -- writes ----------------------------------------------------------------------------
    def txn(self, compares: list[Compare], ops: list[Op], else_ops: list[Op] = ()) -> TxnResult:
        """One etcd transaction: `ops` if every compare holds, else `else_ops`. Counted and
        timed for the metrics, retries on other members included."""
        started = time.perf_counter()
        try:
            result = self._txn(compares, ops, else_ops)
        except StoreUnavailable:
            metrics.etcd_txn(time.perf_counter() - started, "error")
            raise
        metrics.etcd_txn(time.perf_counter() - started, "committed" if result.succeeded else "guard_failed")
        return result

    @_mapped
    def _txn(self, compares: list[Compare], ops: list[Op], else_ops: list[Op]) -> TxnResult:
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
    def open_watch(self, prefix: str, start_revision: int) -> WatchStream:
        """One etcd watch call on `prefix` from `start_revision` (watch.py resumes and shares them)."""
        return WatchStream(etcdrpc.WatchStub(self._client.channel), prefix, start_revision)


@dataclass(frozen=True)
class WatchResponse:
    events: list[Event]
    created: bool
    canceled: bool
    compact_revision: int  # non-zero: the history from the start revision is gone
    revision: int  # the store revision the response was sent at


class WatchStream:
    """An open etcd watch: iterate for its responses (StoreUnavailable when the stream
    breaks); cancel() ends it from any thread."""

    def __init__(self, stub, prefix: str, start_revision: int):
        self._done = threading.Event()
        key = etcd3.utils.to_bytes(prefix)
        self._create = etcdrpc.WatchCreateRequest(key=key, range_end=etcd3.utils.prefix_range_end(key),
                                                  start_revision=start_revision, progress_notify=True)
        self._call = stub.Watch(self._requests())

    def _requests(self):
        yield etcdrpc.WatchRequest(create_request=self._create)
        self._done.wait()  # keep the request side open while the stream lives

    def __iter__(self):
        try:
            for response in self._call:
                yield WatchResponse([_event(e) for e in response.events], response.created, response.canceled,
                                    response.compact_revision, response.header.revision)
        except grpc.RpcError as exc:
            raise StoreUnavailable(f"watch stream broke ({exc.code().name})") from None

    def cancel(self) -> None:
        self._done.set()
        self._call.cancel()


def _kv(kv) -> KeyValue:
    return KeyValue(_key(kv.key), kv.value, kv.mod_revision, kv.create_revision, kv.lease)


def _key(raw: bytes) -> str:
    """A key as read. Keys someone else wrote need not be UTF-8: their bytes survive as
    surrogates (and _raw gives them back), so readers skip them instead of failing."""
    return raw.decode(errors="surrogateescape")


def _raw(key: str) -> bytes:
    return key.encode(errors="surrogateescape")


def _event(ev) -> Event:
    kind = "delete" if ev.type == 1 else "put"  # mvccpb.Event.DELETE
    return Event(kind, _key(ev.kv.key), ev.kv.value, ev.kv.mod_revision, ev.kv.create_revision)

