"""The etcd key layout under one prefix (default /lclusterd). Pure.

    nodes/<node>            NodeInfo, under the node's lease
    prime                   name of the prime node, under the prime's lease
    queue/<uuid>            queued job; value = the QUEUED record (so the prime needs no read)
    jobs/<uuid>             the job record (the truth)
    assign/<node>/<uuid>    an assignment; value = the ASSIGNED record
    kill/<uuid>             a kill request the owning node acts on
    members/<node>          NodeInfo of every node ever registered (no lease: "gone" nodes stay listed)
    drain/<node>            present while the node is draining (no new assignments)
    pools/<uuid>            an -all-nodes pool: spec, created_at, members (node -> member job uuid);
                            each member is an ordinary jobs/<uuid> record pinned to its node
    ended/<ms>/<uuid>       written with every terminal record, in the same transaction; <ms> is its
                            finished_at in milliseconds, zero-padded to ENDED_DIGITS, so the keys sort
                            by end time and retention range-reads what has expired; value = the
                            job's pool uuid ("" for a job in no pool)
    subnets/<net>_<len>     a job subnet claimed by a node (value: its name; no lease: a node that
                            comes back takes the same one again), so nodes sharing one etcd never
                            share a subnet
    removed/<uuid>          a tombstone for a job (or pool) that retention removed: JSON finished_at,
                            removed_at, keep (seconds), kind; under a lease with TTL = keep
    listed/<t>/<i>/<d>      -list's index, newest first in key order: one key per job record, written in
                            the record's first transaction and deleted with it. <t> is its created_at in
                            microseconds, <i> its array index (0 for no array), <d> its uuid, each inverted
                            (<t> = LISTED_MAX - us, 17 digits; <i> = 9999999999 - index; every hex digit d
                            of the uuid as f - d), so a range read in key order with a limit gives the
                            newest jobs, as -list orders them, without a sort. Value: the job's owner (a
                            hint that lets a user's listing skip others' records; the record decides).
                            Every part is derived from the record, so it is checked against it.
    listed-complete         present once the prime has indexed every record (values: "1"); until then -list
                            reads jobs/ itself
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "/lclusterd"
ENDED_DIGITS = 15  # milliseconds since 1970 fit until the year 33658
# listed/: microseconds since 1970 up to records.MAX_TIME (1e11 s, the year 5138) in 17 digits,
# an array index (records: an int32, not negative) in 10
LISTED_MAX = 10**17 - 1
LISTED_INDEX_MAX = 10**10 - 1
_LISTED = re.compile(r"^([0-9]{17})/([0-9]{10})/([0-9a-f]{32})$")
_INVERT_HEX = str.maketrans("0123456789abcdef", "fedcba9876543210")  # its own inverse


@dataclass(frozen=True)
class Keys:
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        cleaned = "/" + self.prefix.strip("/") if self.prefix.strip("/") else ""
        object.__setattr__(self, "prefix", cleaned)

    def _k(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    # one key each
    def job(self, job_id: str) -> str:
        return self._k("jobs", job_id)

    def queue(self, job_id: str) -> str:
        return self._k("queue", job_id)

    def assign(self, node: str, job_id: str) -> str:
        return self._k("assign", node, job_id)

    def kill(self, job_id: str) -> str:
        return self._k("kill", job_id)

    def node(self, name: str) -> str:
        return self._k("nodes", name)

    def member(self, name: str) -> str:
        return self._k("members", name)

    def drain(self, name: str) -> str:
        return self._k("drain", name)

    def pool(self, pool_id: str) -> str:
        return self._k("pools", pool_id)

    def ended(self, finished_at: float, job_id: str) -> str:
        return self._k("ended", _millis(finished_at), job_id)

    def ended_before(self, when: float) -> str:
        """The range end of ended/ keys for jobs that finished before `when` (exclusive)."""
        return self._k("ended", _millis(when))

    def subnet(self, network: str) -> str:
        """The claim of `network` (10.88.3.0/24 as subnets/10.88.3.0_24: one path element)."""
        return self._k("subnets", network.replace("/", "_"))

    def removed(self, job_id: str) -> str:
        return self._k("removed", job_id)

    def listed(self, created_at: float, array_index: int | None, job_id: str) -> str:
        """The index key of a job created at `created_at` (seconds) with `array_index` (None: no
        array, as 0): listed/ in key order is the newest job first (see the docstring)."""
        inverted = (LISTED_MAX - stamp_us(created_at), LISTED_INDEX_MAX - min(max(array_index or 0, 0), LISTED_INDEX_MAX))
        return self._k("listed", f"{inverted[0]:017d}", f"{inverted[1]:010d}", job_id.translate(_INVERT_HEX))

    def listed_parts(self, key: str) -> tuple[int, int, str]:
        """(created_at in microseconds, array index, uuid) of a listed/ key; ValueError when the key
        is not one this layout makes (whoever writes etcd may write anything there)."""
        match = _LISTED.match(key[len(self.listed_prefix):]) if key.startswith(self.listed_prefix) else None
        if match is None:
            raise ValueError(f"not an index key: {key[:200]!r}")
        stamp, index, job_id = match.groups()
        return LISTED_MAX - int(stamp), LISTED_INDEX_MAX - int(index), job_id.translate(_INVERT_HEX)

    def listed_newer_than(self, us: int) -> str:
        """The range end of the listed/ keys of jobs created after `us` microseconds: [listed_prefix,
        this) holds exactly those, newest first (a key of `us` itself sorts after it)."""
        return self._k("listed", f"{LISTED_MAX - min(max(us, 0), LISTED_MAX):017d}")

    def listed_group(self, us: int) -> str:
        """The prefix of the listed/ keys of every job created in microsecond `us` (a batch, a
        pool or an array is added at one instant)."""
        return self._k("listed", f"{LISTED_MAX - min(max(us, 0), LISTED_MAX):017d}", "")

    @property
    def listed_complete(self) -> str:
        return self._k("listed-complete")

    @property
    def prime(self) -> str:
        return self._k("prime")

    # prefixes (each ends with "/")
    @property
    def jobs_prefix(self) -> str:
        return self._k("jobs", "")

    @property
    def queue_prefix(self) -> str:
        return self._k("queue", "")

    @property
    def kill_prefix(self) -> str:
        return self._k("kill", "")

    @property
    def nodes_prefix(self) -> str:
        return self._k("nodes", "")

    @property
    def members_prefix(self) -> str:
        return self._k("members", "")

    @property
    def drain_prefix(self) -> str:
        return self._k("drain", "")

    @property
    def pools_prefix(self) -> str:
        return self._k("pools", "")

    @property
    def ended_prefix(self) -> str:
        return self._k("ended", "")

    @property
    def subnets_prefix(self) -> str:
        return self._k("subnets", "")

    @property
    def removed_prefix(self) -> str:
        return self._k("removed", "")

    @property
    def listed_prefix(self) -> str:
        return self._k("listed", "")

    @property
    def assign_all_prefix(self) -> str:
        return self._k("assign", "")

    def assign_prefix(self, node: str) -> str:
        return self._k("assign", node, "")

    # parsing
    @staticmethod
    def last(key: str) -> str:
        """The last path element: the uuid of jobs/, queue/, kill/, pools/ keys, the name of nodes/."""
        return key.rsplit("/", 1)[-1]

    def assign_parts(self, key: str) -> tuple[str, str]:
        """(node, uuid) of an assign/<node>/<uuid> key."""
        node, job_id = key[len(self.assign_all_prefix):].split("/", 1)
        return node, job_id

    def ended_parts(self, key: str) -> tuple[float, str]:
        """(finished_at in seconds, uuid) of an ended/<ms>/<uuid> key."""
        millis, job_id = key[len(self.ended_prefix):].split("/", 1)
        return int(millis) / 1000, job_id


def _millis(when: float) -> str:
    return f"{max(0, int(when * 1000)):0{ENDED_DIGITS}d}"


def stamp_us(created_at: float) -> int:
    """A job's created_at in whole microseconds, as its listed/ key holds it (within the layout's
    range); the same float always gives the same number, so the key can be made again from the record."""
    return min(max(round(created_at * 1_000_000), 0), LISTED_MAX)
