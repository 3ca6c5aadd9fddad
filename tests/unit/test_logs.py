"""A job's log files (cluster/logs.py): named from well-formed job ids only, created exclusively
and never through a symlink, appended to by a later attempt, sealed once the job has ended
for good, in a directory no one but root can change."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from lclusterd.cluster.logs import LogFiles, LogsSealed

JOB = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def logs(tmp_path) -> LogFiles:
    files = LogFiles(tmp_path / "state" / "logs")
    files.prepare()
    return files


@pytest.mark.parametrize("bad", ["../../../../tmp/x", "x", JOB.upper(), JOB + "/", "", "\udcff" * 32])
def test_names_come_from_job_ids_only(logs, bad):
    with pytest.raises(ValueError, match="not a job id"):
        logs.stdout(bad)
    with pytest.raises(ValueError):
        logs.create(bad)
    assert not logs.exist(bad)


def test_a_symlink_waiting_under_the_name_is_never_followed(logs, tmp_path):
    target = tmp_path / "outside"
    os.symlink(target, logs.stdout(JOB))
    with pytest.raises(OSError) as caught:
        logs.create(JOB)
    assert caught.value.errno == errno.ELOOP and not target.exists()
    target.write_text("secret\n")
    with pytest.raises(OSError) as caught:  # nor read through
        list(logs.read_new(JOB, [0, 0]))
    assert caught.value.errno == errno.ELOOP
    os.symlink(target, logs.stderr(JOB))
    assert logs.last_stderr_line(JOB) == ""
    logs.mark_ended(JOB)
    logs.seal(JOB)
    assert target.read_text() == "secret\n" and stat.S_IMODE(target.stat().st_mode) != 0o400


def test_a_fifo_is_no_log_file(logs):
    os.mkfifo(logs.stdout(JOB))
    with pytest.raises(OSError):  # ENXIO: opened without blocking, and no reader (else: not a plain file)
        logs.create(JOB)
    with pytest.raises(OSError, match="not a plain file"):
        list(logs.read_new(JOB, [0, 0]))


def test_new_files_are_created_exclusively_and_a_later_attempt_appends(logs):
    logs.create(JOB)
    assert stat.S_IMODE(os.stat(logs.stdout(JOB)).st_mode) == 0o600
    logs.stdout(JOB).write_text("attempt 1\n")
    logs.create(JOB)  # attempt 2 on this node, after the node was declared lost: the same files
    assert logs.stdout(JOB).read_text() == "attempt 1\n"


def test_once_sealed_no_record_reusing_the_id_gets_the_files(logs):
    logs.create(JOB)
    logs.stdout(JOB).write_text("the job's own output\n")
    logs.seal(JOB)
    assert stat.S_IMODE(os.stat(logs.stdout(JOB)).st_mode) == 0o400
    with pytest.raises(LogsSealed, match=f"the log files of job {JOB} on this node belong to a job that has ended"):
        logs.create(JOB)
    assert logs.stdout(JOB).read_text() == "the job's own output\n"
    assert list(logs.read_new(JOB, [0, 0])) == [(0, b"the job's own output\n")]  # still readable
    logs.seal("1" * 32)  # nothing there: nothing to do, no error


def test_the_directory_is_made_root_only(tmp_path):
    directory = tmp_path / "logs"
    directory.mkdir(mode=0o777)
    os.chmod(directory, 0o777)
    LogFiles(directory).prepare()
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_a_directory_others_can_change_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone could rename logs/ and put another in its place
    with pytest.raises(PermissionError, match=f"is inside {shared}, which users other than root can write"):
        LogFiles(shared / "state" / "logs").prepare()
    os.chmod(shared, 0o1777)  # sticky, like /tmp: others cannot move what is not theirs
    LogFiles(shared / "state" / "logs").prepare()


def test_a_symlinked_log_directory_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "logs")
    with pytest.raises(PermissionError, match="not a symlink"):
        LogFiles(tmp_path / "logs").prepare()


def test_the_sweep_looks_only_at_job_files(logs):
    logs.create(JOB)
    (logs.directory / "..x.out").write_text("")
    (logs.directory / "notes.err").write_text("")
    assert logs.written_before(float("inf")) == [JOB]
