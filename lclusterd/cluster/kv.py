"""The values etcd access is described in: keys read (KeyValue), changes watched (Event), and
a transaction's compares and operations (ModIs, Absent, ValueIs; Put, Delete). Pure: the
rest of the cluster layer builds transactions from these and Store sends them."""

from __future__ import annotations

from dataclasses import dataclass

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
# What the writers that batch (group commit, Jobs.commit, pools) put into one transaction, in
# bytes of keys and values: etcd refuses a request over --max-request-bytes (1.5 MiB by
# default), whatever its cause, and the rest is headroom for the request's framing. One
# change bigger than this still goes alone: lclusterd.limits keeps each record far enough below.
MAX_TXN_BYTES = 1 << 20


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


def txn_bytes(compares: list[Compare], ops: list[Op]) -> int:
    """The keys and values a transaction carries (what MAX_TXN_BYTES bounds)."""
    size = sum(len(c.key) + len(getattr(c, "value", b"")) for c in compares)
    return size + sum(len(op.key) + len(getattr(op, "value", b"")) for op in ops)


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store revision after the transaction (= mod revision of what it wrote)
