"""Records as the cluster layer reads them from etcd: decoded strictly (model's from_bytes,
checked by lclusterd/records.py) with the id their key names, and each one that fails
logged once.

Every reader of a jobs/, queue/, assign/, pools/, nodes/ or members/ value goes through
here. A record that fails is a RecordError: a reader of many skips it (a listing, the
scheduler's queue, the worker's assignments), a reader of that one id answers as if there
were none and says why (MalformedRecord). It never breaks a call, a thread or another job.

The log line says which key, which revision and what is wrong, once per key and revision
(the scheduler looks at its queue on every pass, -list reads every record on every call):
the key+revision pairs already logged are remembered, the most recent LOGGED_ONCE of them.
That memory is the one piece of module state here; it only decides whether to log.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from lclusterd import metrics
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import KeyValue
from lclusterd.errors import MalformedRecord, RecordError
from lclusterd.model import JobRecord, NodeInfo, PoolRecord

log = logging.getLogger(__name__)

LOGGED_ONCE = 4096
# what a skipped value is, by the key's section (metrics' `kind` label)
_KINDS = {"jobs": "job", "queue": "queue", "assign": "assignment", "pools": "pool", "nodes": "node", "members": "node",
          "listed": "index"}

_logged: OrderedDict[tuple[str, int], None] = OrderedDict()
_lock = threading.Lock()


def job(key: str, raw: bytes, revision: int = 0) -> JobRecord:
    """The job record in `raw`, read at `key` (jobs/<uuid>, queue/<uuid>, assign/<node>/<uuid>)
    with mod revision `revision`; RecordError (logged) when it is not a valid one of that uuid."""
    try:
        return JobRecord.from_bytes(raw, Keys.last(key))
    except RecordError as error:
        skipped(key, revision, error)
        raise


def pool(key: str, raw: bytes, revision: int = 0) -> PoolRecord:
    """As `job`, for pools/<uuid>."""
    try:
        return PoolRecord.from_bytes(raw, Keys.last(key))
    except RecordError as error:
        skipped(key, revision, error)
        raise


def node(key: str, raw: bytes, revision: int = 0) -> NodeInfo:
    """As `job`, for nodes/<name> and members/<name>."""
    try:
        return NodeInfo.from_bytes(raw, Keys.last(key))
    except RecordError as error:
        skipped(key, revision, error)
        raise


def job_kv(kv: KeyValue) -> JobRecord:
    return job(kv.key, kv.value, kv.mod_revision)


def jobs_of(kvs: list[KeyValue]) -> list[tuple[JobRecord, KeyValue]]:
    """The valid job records among `kvs`, each with its KeyValue, in the order given."""
    found = []
    for kv in kvs:
        try:
            found.append((job_kv(kv), kv))
        except RecordError:
            continue
    return found


def job_or_missing(kv: KeyValue, job_id: str, kind: str = "job") -> JobRecord:
    """The record for a request about `job_id`: MalformedRecord (a JobNotFound, so callers treat
    it as no record) when it fails, naming what is wrong."""
    try:
        return job_kv(kv)
    except RecordError as error:
        raise MalformedRecord(job_id, str(error), kind) from None


def skipped(key: str, revision: int, error: RecordError) -> None:
    """Log that the value at `key` (mod revision `revision`) is ignored, and count it in the
    metrics (lclusterd_records_skipped_total), unless already done."""
    with _lock:
        if (key, revision) in _logged:
            return
        _logged[(key, revision)] = None
        if len(_logged) > LOGGED_ONCE:
            _logged.popitem(last=False)
    metrics.record_skipped(_kind(key))
    log.warning("ignoring the value of %s (revision %d), which is not a record lclusterd wrote: %s", key[:200],
                revision, error)


def _kind(key: str) -> str:
    """<prefix>/assign/<node>/<uuid> (whatever the node is called) or <prefix>/jobs/<uuid>, ..."""
    parts = key.split("/")
    if parts[-3:-2] == ["assign"]:
        return "assignment"
    if parts[-4:-3] == ["listed"]:  # <prefix>/listed/<time>/<index>/<uuid>, -list's index (listing.py)
        return "index"
    return _KINDS.get(parts[-2], "other") if len(parts) > 1 else "other"
