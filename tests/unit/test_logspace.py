"""LogSpace (cluster/logspace.py): past --max-log-space, the output of the jobs that ended first
is replaced by one line, down to 90 % of the limit; running jobs and jobs that just ended are
left alone; the files keep their times for the log sweep."""

from __future__ import annotations

import os

import pytest

from lclusterd import metrics
from lclusterd.cluster.logs import LogFiles
from lclusterd.cluster.logspace import LogSpace, limit_of

NOW = 1_000_000.0


def job(n: int) -> str:
    return f"{n:032x}"


@pytest.fixture
def logs(tmp_path) -> LogFiles:
    files = LogFiles(tmp_path / "logs")
    files.prepare()
    for n in range(5):  # job 0 ended first
        files.create(job(n))
        files.stdout(job(n)).write_bytes(b"o" * 20_000)
        files.stderr(job(n)).write_bytes(b"e" * 4_000)
        for path in (files.stdout(job(n)), files.stderr(job(n))):
            os.utime(path, (NOW - 1000 + n * 100, NOW - 1000 + n * 100))
    return files


def test_the_jobs_that_ended_first_lose_their_output_down_to_the_low_water(logs):
    total = sum(size for size, _ in logs.usage().values())
    space = LogSpace(logs, total - 30_000, "n1", running=lambda: {job(1)}, clock=lambda: NOW)
    evicted = metrics.REGISTRY.get_sample_value("lclusterd_log_space_evictions_total")
    assert space.trim() == 2  # job 0, then (job 1 running) job 2
    assert metrics.REGISTRY.get_sample_value("lclusterd_log_space_evictions_total") == evicted + 2
    for n in (0, 2):
        text = logs.stdout(job(n)).read_bytes()
        assert text.startswith(b"[lclusterd: this job's output was removed at ") and b"node n1 within --max-log-space" in text
        assert not logs.stderr(job(n)).exists()
        assert os.stat(logs.stdout(job(n))).st_mtime == NOW - 1000 + n * 100  # the sweep still removes it after --keep
    for n in (1, 3, 4):
        assert logs.stdout(job(n)).read_bytes() == b"o" * 20_000 and logs.stderr(job(n)).exists()
    assert sum(size for size, _ in logs.usage().values()) <= (total - 30_000) * 0.9


def test_jobs_that_just_ended_and_a_node_without_a_limit_are_left_alone(logs):
    assert LogSpace(logs, 1, "n1", running=set, clock=lambda: NOW - 1000 + 3).trim() == 0  # all within the grace
    assert LogSpace(logs, 0, "n1", running=set, clock=lambda: NOW).trim() == 0
    assert LogSpace(logs, 10**15, "n1", running=set, clock=lambda: NOW).trim() == 0  # the disk holds less than that
    assert all(logs.stdout(job(n)).read_bytes() == b"o" * 20_000 for n in range(5))


def test_the_limit_is_a_size_a_share_of_the_disk_or_none(tmp_path):
    st = os.statvfs(tmp_path)
    assert limit_of("10%", str(tmp_path)) == int(st.f_blocks * st.f_frsize * 0.1)
    assert (limit_of("2G", str(tmp_path)), limit_of("0", str(tmp_path))) == (2 << 30, 0)
    for bad in ("0%", "101%", "x%", "lots", "-5"):
        with pytest.raises(ValueError):
            limit_of(bad, str(tmp_path))
