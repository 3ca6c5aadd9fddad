"""The result journal without etcd: entries written whole, never through a symlink, named only
by job ids; malformed and foreign entries skipped and logged; the reporter journals a terminal
record before it first tries to write it and drops it once etcd has it (or rejected it); a
journaled record folds in place of the record it ended (an in-memory store with etcd's
semantics stands in for etcd)."""

from __future__ import annotations

import logging
import os
import stat
import threading

import pytest
from memstore import MemStore

from lclusterd.cluster import journal as journal_module
from lclusterd.cluster import outcome
from lclusterd.cluster.jobs import Jobs
from lclusterd.cluster.journal import Journal
from lclusterd.cluster.keys import Keys
from lclusterd.cluster.reporter import Owned, OwnedJobs, Reporter
from lclusterd.errors import StoreUnavailable
from lclusterd.model import ASSIGNED, EXITED, LOST, RUNNING, JobRecord, JobSpec
from lclusterd.runtime.spec import RunResult
from polling import until

NODE = "lock-unit"
KEYS = Keys("/t")


def ended(job_id: str = "a" * 32, node: str = NODE, attempt: int = 1) -> JobRecord:
    running = JobRecord(id=job_id, spec=JobSpec("true"), node=node, attempt=attempt).moved_to(ASSIGNED, node=node)
    return running.moved_to(RUNNING, host_pid=7, started_at=1.0).moved_to(EXITED, exit_code=0, finished_at=2.0)


@pytest.fixture
def journal(tmp_path) -> Journal:
    j = Journal(tmp_path / "journal", NODE)
    j.open()
    yield j
    j.close()


# -- the journal -------------------------------------------------------------------------------------
def test_an_entry_is_the_record_in_a_private_file(journal):
    record = ended()
    journal.put(record)
    assert stat.S_IMODE(journal.directory.stat().st_mode) == 0o700
    entry = journal.directory / record.id
    assert stat.S_IMODE(entry.lstat().st_mode) == 0o600
    assert journal.entries() == {record.id: record}
    assert os.listdir(journal.directory) == [record.id]  # no temporary file left
    journal.put(record.with_changes(exit_code=3))  # a later fold replaces it
    assert journal.entries()[record.id].exit_code == 3
    journal.remove(record.id)
    journal.remove(record.id)  # gone already: fine
    assert journal.entries() == {}


def test_an_id_that_is_no_job_id_names_no_file(journal, tmp_path):
    with pytest.raises(ValueError, match="not a job id"):
        journal.put(ended().with_changes(id="../../escaped"))
    assert os.listdir(journal.directory) == [] and not (tmp_path / "escaped").exists()
    journal.remove("../journal")  # ignored, not a job id
    assert journal.directory.is_dir()


def test_a_symlink_in_place_is_replaced_not_written_through(journal, tmp_path):
    target = tmp_path / "target"
    target.write_text("untouched")
    record = ended()
    (journal.directory / record.id).symlink_to(target)
    (journal.directory / f".new-{record.id}").symlink_to(target)
    journal.put(record)
    assert target.read_text() == "untouched"
    assert not (journal.directory / record.id).is_symlink()
    assert journal.entries() == {record.id: record}
    journal.remove(record.id)  # its file is a spare now; make the spare a symlink
    (spare,) = journal.directory.glob(".spare-*")
    spare.unlink()
    spare.symlink_to(target)
    journal.put(ended("b" * 32))
    assert target.read_text() == "untouched" and journal.entries() == {"b" * 32: ended("b" * 32)}


def test_removed_entries_are_recycled_not_unlinked(journal, tmp_path):
    long = ended().with_changes(error="x" * 5000)
    journal.put(long)
    inode = (journal.directory / long.id).stat().st_ino
    journal.remove(long.id)
    short = ended("b" * 32)
    journal.put(short)  # written over the spare in place: the same file, cut to its length
    assert (journal.directory / short.id).stat().st_ino == inode
    assert (journal.directory / short.id).read_bytes() == short.to_bytes()
    assert sorted(os.listdir(journal.directory)) == [short.id]
    ids = [f"{n:032x}" for n in range(1, journal_module.MAX_SPARES + 6)]
    for job_id in ids:
        journal.put(ended(job_id))
    for job_id in ids:
        journal.remove(job_id)
    assert len(list(journal.directory.glob(".spare-*"))) == journal_module.MAX_SPARES
    journal.close()
    again = Journal(journal.directory, NODE)
    again.open()  # a new run clears the spares an earlier one left
    assert sorted(os.listdir(journal.directory)) == [short.id]
    again.close()


def test_malformed_and_foreign_entries_are_skipped_and_logged(journal, tmp_path, caplog):
    good = ended("b" * 32)
    journal.put(good)
    d = journal.directory
    (d / ("c" * 32)).write_text("{not json")
    (d / "notes.txt").write_text("hello")
    (d / ("d" * 32)).write_bytes(ended("d" * 32, node="other-node").to_bytes())
    (d / ("e" * 32)).write_bytes(ended("f" * 32).to_bytes())  # a record of another job
    running = JobRecord(id="1" * 32, spec=JobSpec("true"), node=NODE).moved_to(ASSIGNED, node=NODE)
    (d / ("1" * 32)).write_bytes(running.to_bytes())  # not a result
    (d / ("2" * 32)).write_bytes(b"[1, 2]")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(ended("3" * 32).to_bytes())
    (d / ("3" * 32)).symlink_to(elsewhere)  # never followed
    os.mkfifo(d / ("4" * 32))  # never waited on
    (d / ("5" * 32)).mkdir()
    with caplog.at_level(logging.WARNING, logger="lclusterd.cluster.journal"):
        assert journal.entries() == {good.id: good}
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 9, skipped
    assert any("'notes.txt': its name is not a job id" in m for m in skipped)
    assert any("not a terminal record of job dddd" in m and "node other-node" in m for m in skipped)
    assert all(name.exists() or name.is_symlink() for name in d.iterdir())  # left for an operator


def test_the_directory_is_made_private_and_must_be_a_directory(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o755)
    j = Journal(open_dir, NODE)
    j.open()
    j.close()
    assert stat.S_IMODE(open_dir.stat().st_mode) == 0o700
    (tmp_path / "link").symlink_to(open_dir)
    with pytest.raises(OSError):
        Journal(tmp_path / "link", NODE).open()


# -- the fold ----------------------------------------------------------------------------------------
def test_a_journaled_result_folds_in_place_of_the_same_attempt():
    journaled = ended()
    assigned = JobRecord(id=journaled.id, spec=JobSpec("true"), node=NODE).moved_to(ASSIGNED, node=NODE)
    running = assigned.moved_to(RUNNING, host_pid=7)
    assert outcome.fold(assigned, [outcome.Recovered(journaled)]) is journaled
    assert outcome.fold(running, [outcome.Recovered(journaled)]) is journaled
    lost = running.moved_to(LOST, error="the prime buried it")
    assert outcome.fold(lost, [outcome.Recovered(journaled)]) is lost
    later = assigned.with_changes(attempt=2)
    assert outcome.fold(later, [outcome.Recovered(journaled)]) is later


# -- the reporter --------------------------------------------------------------------------------------
class FlakyStore(MemStore):
    """A MemStore that can be down, and notes whether the journal held each job's entry when a
    transaction carrying its terminal record was tried."""

    def __init__(self, journal_dir):
        super().__init__()
        self.down = threading.Event()
        self.journal_dir = journal_dir
        self.journaled_at_write: list[bool] = []

    def txn(self, compares, ops, else_ops=()):
        for op in ops:
            if getattr(op, "key", "").startswith(KEYS.job("")) and b'"EXITED"' in getattr(op, "value", b""):
                self.journaled_at_write.append((self.journal_dir / op.key.rsplit("/", 1)[1]).exists())
        if self.down.is_set():
            raise StoreUnavailable("etcd at test is unavailable (down)")
        return super().txn(compares, ops, else_ops)


def reporter_on(store, journal, fenced=None):
    jobs = Jobs(store, KEYS)
    owned = OwnedJobs()
    reporter = Reporter(jobs, owned, on_fenced=(fenced if fenced is not None else []).append, journal=journal)
    reporter.start()
    return jobs, owned, reporter


def assigned_in(store, jobs, job_id="a" * 32) -> tuple[JobRecord, int]:
    record = JobRecord(id=job_id, spec=JobSpec("true"), node=NODE).moved_to(ASSIGNED, node=NODE)
    revision = store.txn([], [jobs.update(record, 0).ops[0]]).revision
    return record, revision


def test_a_result_is_journaled_before_its_write_and_dropped_after(journal):
    store = FlakyStore(journal.directory)
    jobs, owned, reporter = reporter_on(store, journal)
    record, revision = assigned_in(store, jobs)
    owned.add(Owned(record, revision))
    reporter.report(record.id, outcome.Ended(RunResult(record.id, EXITED, exit_code=0, host_pid=3, finished_at=5.0)))
    assert reporter.stop(10)
    assert jobs.get(record.id)[0].state == EXITED
    assert store.journaled_at_write == [True]
    assert journal.entries() == {}


def test_a_result_etcd_cannot_take_stays_journaled_until_it_can(journal):
    store = FlakyStore(journal.directory)
    jobs, owned, reporter = reporter_on(store, journal)
    record, revision = assigned_in(store, jobs)
    owned.add(Owned(record, revision))
    store.down.set()
    reporter.report(record.id, outcome.Ended(RunResult(record.id, EXITED, exit_code=4, host_pid=3, finished_at=5.0)))
    until(lambda: record.id in journal.entries(), "the result to be journaled")
    assert journal.entries()[record.id].exit_code == 4 and jobs.get(record.id)[0].state == ASSIGNED
    store.down.clear()
    assert reporter.stop(10)
    assert jobs.get(record.id)[0].exit_code == 4
    assert journal.entries() == {} and all(store.journaled_at_write)


def test_a_rejected_result_leaves_no_entry(journal):
    store = FlakyStore(journal.directory)
    fenced: list[str] = []
    jobs, owned, reporter = reporter_on(store, journal, fenced)
    record, revision = assigned_in(store, jobs)
    owned.add(Owned(record, revision))
    buried = jobs.lose(record, revision, "node lock-unit is gone")  # the prime got there first
    store.txn([], buried.ops)
    reporter.report(record.id, outcome.Ended(RunResult(record.id, EXITED, exit_code=0, host_pid=3, finished_at=5.0)))
    assert reporter.stop(10)
    assert fenced == [record.id] and jobs.get(record.id)[0].state == LOST
    assert journal.entries() == {}
