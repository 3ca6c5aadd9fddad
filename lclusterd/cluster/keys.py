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
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "/lclusterd"
ENDED_DIGITS = 15  # milliseconds since 1970 fit until the year 33658


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
