"""LogSpace: the job logs of a node stay within --max-log-space, so that jobs writing all they
may (--max-log-size a stream) for days cannot fill the disk the node's etcd, journal and state
live on.

When the logs take more than the limit, the output of the jobs that ended longest ago (and not
in the last GRACE seconds: their end is still being reported) is replaced by one line saying
when and why it went, until the logs take at most LOW_WATER of the limit. The stdout file
stays (its existence is the node's mark that it may have started the job: worker.py) and
keeps its time, so the log sweep still removes it after --keep. A running job's logs are never
touched: --max-log-size bounds each of those.

Cost: one statvfs of the log directory every INTERVAL seconds; the directory is listed only
while its file system holds more than the limit (the logs cannot take more than that), and
then at most as often as keeps the listing under 1 % of one core.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

from lclusterd import metrics
from lclusterd.cluster.logs import LogFiles
from lclusterd.cluster.retention import Loop
from lclusterd.units import format_size, parse_size_or_share

log = logging.getLogger(__name__)

INTERVAL = 5.0
GRACE = 5.0  # seconds after a job's end before its output may go (its end is reported by then)
LOW_WATER = 0.9  # trim down to this share of the limit, not just under it (no trim at every pass)
SMALL = 8192  # a job's logs this small on disk are left alone (the note itself takes a block)


def limit_of(text: str, directory: str) -> int:
    """--max-log-space in bytes: a size, "N%" of the file system holding `directory`, or 0 (no
    limit). ValueError on anything else."""
    size, share = parse_size_or_share(text)
    if share:
        st = os.statvfs(directory)
        return int(st.f_blocks * st.f_frsize * share)
    return size


def note(node: str, limit: int, when: float) -> bytes:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    return (f"[lclusterd: this job's output was removed at {stamp} to keep the job logs of node {node} "
            f"within --max-log-space {format_size(limit)}]\n").encode()


class LogSpace:
    def __init__(self, logs: LogFiles, limit: int, node: str, running: Callable[[], set[str]],
                 clock: Callable[[], float] = time.time):
        self.logs, self.limit, self.node = logs, limit, node
        self._running, self._clock = running, clock
        self._next_listing = 0.0
        self._loop = Loop("log space", INTERVAL, lambda _stopped: self.trim())

    def start(self) -> None:
        if self.limit:
            self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def trim(self) -> int:
        """Make room if the logs take more than the limit; how many jobs' output went."""
        started = time.monotonic()
        if not self.limit or started < self._next_listing or self._file_system_used() <= self.limit:
            return 0
        usage = self.logs.usage()
        listed = time.monotonic()
        self._next_listing = listed + 100 * (listed - started)
        total = sum(size for size, _ in usage.values())
        if total <= self.limit:
            return 0
        now, running = self._clock(), self._running()
        cutoff, text = now - GRACE, note(self.node, self.limit, now)
        evicted = 0
        for job_id, (size, mtime) in sorted(usage.items(), key=lambda item: item[1][1]):
            if total <= self.limit * LOW_WATER or mtime >= cutoff:
                break
            if job_id in running or size <= SMALL:
                continue
            total -= self.logs.replace_output(job_id, text)
            evicted += 1
        if evicted:
            metrics.log_space_evicted(evicted)
            log.warning("log space: the job logs took more than --max-log-space %s; removed the output of the %d "
                        "job(s) that ended first, now %s", format_size(self.limit), evicted, format_size(total))
        return evicted

    def _file_system_used(self) -> int:
        st = os.statvfs(self.logs.directory)
        return (st.f_blocks - st.f_bfree) * st.f_frsize
