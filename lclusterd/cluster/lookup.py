"""What a job id names: a job, an -all-nodes pool, or a job that retention removed."""

from __future__ import annotations

from dataclasses import dataclass

from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.pools import Pools
from lclusterd.cluster.retention import removal_of
from lclusterd.errors import JobNotFound, MalformedRecord
from lclusterd.model import JobRecord, PoolRecord


@dataclass(frozen=True)
class FoundJob:
    record: JobRecord
    revision: int


@dataclass(frozen=True)
class FoundPool:
    pool: PoolRecord


class Lookup:
    def __init__(self, jobs: Jobs, pools: Pools):
        self.jobs = jobs
        self.pools = pools

    def resolve(self, job_id: str) -> FoundJob | FoundPool:
        """The job or pool with this id. JobRemoved when retention removed it (and its
        tombstone is still there), MalformedRecord when its record is not one lclusterd wrote,
        else JobNotFound (all three are JobNotFound)."""
        try:
            return FoundJob(*self.jobs.get(job_id))
        except JobNotFound as missing:
            return self.pool(job_id, missing)

    def pool(self, job_id: str, missing: JobNotFound) -> FoundPool:
        """The pool for an id that names no job; `missing` (or JobRemoved) if none. When both
        the job's record and the pool's are malformed, the job's is the one said."""
        try:
            pool = self.pools.get(job_id)
        except MalformedRecord:
            if isinstance(missing, MalformedRecord):
                raise missing from None
            raise
        if pool is None:
            raise removal_of(self.jobs.store, self.jobs.keys, job_id) or missing
        return FoundPool(pool)
