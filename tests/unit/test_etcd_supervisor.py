"""The embedded etcd's supervision without etcd: a stand-in whose "etcd" is a real `sleep`
process, killed by the test; its restarts succeed or fail as the test says. Bounded tries with
a doubling delay, one log line each, the count kept across a death soon after a restart, and
on_lost called once when the tries run out; closing stops it without a restart."""

from __future__ import annotations

import logging
import subprocess
import threading
import time

import pytest

from lclusterd.etcd_embedded import EtcdStartError
from lclusterd.etcd_supervisor import EtcdSupervisor, describe_exit
from polling import until


class FakeEtcd:
    """EmbeddedEtcd's face to the supervisor: process, wait, restart, stop, endpoint."""

    endpoint = "https://127.0.0.1:1"

    def __init__(self, restarts_fail: int = 0):
        self.process = subprocess.Popen(["sleep", "60"])
        self.restarts_fail = restarts_fail  # the next this many restarts fail
        self.restarted = threading.Event()
        self.tries: list[float] = []
        self.stopped = False

    def wait(self) -> int:
        return self.process.wait()

    def restart(self) -> str:
        self.tries.append(time.monotonic())
        if self.restarts_fail:
            self.restarts_fail -= 1
            raise EtcdStartError("the embedded etcd exited with status 1: cannot listen")
        self.process = subprocess.Popen(["sleep", "60"])
        self.restarted.set()
        return self.endpoint

    def stop(self) -> None:
        self.stopped = True
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def lost() -> list[str]:
    return []


def test_a_killed_etcd_is_started_again(lost, caplog):
    etcd = FakeEtcd(restarts_fail=2)
    supervisor = EtcdSupervisor(etcd, lost.append, tries=5, first_delay=0.01)
    supervisor.start()
    first = etcd.process
    with caplog.at_level(logging.INFO, logger="lclusterd.etcd_supervisor"):
        first.kill()
        assert etcd.restarted.wait(10)
        until(lambda: supervisor.restarts == 1, "the restart to be counted")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == f"the embedded etcd (pid {first.pid}) was killed by SIGKILL; starting it again in 0.01s (try 1 of 5)"
    assert lines[1].startswith("the embedded etcd did not start again (the embedded etcd exited with status 1: "
                               "cannot listen); starting it again in 0.02s (try 2 of 5)")
    assert lines[2].endswith("starting it again in 0.04s (try 3 of 5)")
    assert lines[3] == f"the embedded etcd is running again (pid {etcd.process.pid}, at https://127.0.0.1:1)"
    assert len(lines) == 4 and lost == []
    assert etcd.tries[2] - etcd.tries[1] >= 0.04 and etcd.tries[1] - etcd.tries[0] >= 0.02  # it backs off
    supervisor.close()
    assert etcd.stopped and etcd.process.poll() is not None and supervisor.restarts == 1


def test_when_every_try_fails_the_node_is_told_once(lost, caplog):
    etcd = FakeEtcd(restarts_fail=99)
    supervisor = EtcdSupervisor(etcd, lost.append, tries=3, first_delay=0.01)
    supervisor.start()
    with caplog.at_level(logging.WARNING, logger="lclusterd.etcd_supervisor"):
        etcd.process.kill()
        until(lambda: lost, "the supervisor to give up")
    assert lost == ["the embedded etcd could not be started again after 3 tries; the last: the embedded etcd exited "
                    "with status 1: cannot listen"]
    assert len(etcd.tries) == 3 and len(caplog.records) == 3
    supervisor.close()
    assert len(lost) == 1


def test_an_etcd_that_dies_soon_after_each_restart_runs_out_of_tries(lost):
    etcd = FakeEtcd()
    supervisor = EtcdSupervisor(etcd, lost.append, tries=3, first_delay=0.01, stable=60)
    supervisor.start()
    for n in range(3):
        etcd.restarted.clear()
        etcd.process.kill()
        assert etcd.restarted.wait(10), n
    etcd.process.kill()  # the fourth death within `stable` of the last restart: no try is left
    until(lambda: lost, "the supervisor to give up")
    assert len(etcd.tries) == 3
    assert lost == [f"the embedded etcd could not be started again after 3 tries; the last: the embedded etcd (pid "
                    f"{etcd.process.pid}) was killed by SIGKILL"]
    supervisor.close()


def test_an_etcd_that_stayed_up_gets_its_tries_back(lost):
    etcd = FakeEtcd()
    supervisor = EtcdSupervisor(etcd, lost.append, tries=1, first_delay=0.01, stable=0.2)
    supervisor.start()
    for n in range(3):
        time.sleep(0.3)  # up for longer than `stable` (not a timing assertion: a set-up)
        etcd.restarted.clear()
        etcd.process.kill()
        assert etcd.restarted.wait(10), n
    assert lost == [] and supervisor.restarts == 3
    supervisor.close()


def test_closing_while_waiting_to_restart_starts_nothing(lost):
    etcd = FakeEtcd()
    supervisor = EtcdSupervisor(etcd, lost.append, tries=3, first_delay=5)
    supervisor.start()
    etcd.process.kill()
    until(lambda: etcd.process.poll() is not None, "the fake etcd to die")
    time.sleep(0.05)  # let the supervisor see it and start waiting its delay
    supervisor.close()
    assert etcd.tries == [] and lost == [] and not supervisor._thread.is_alive()


def test_exit_statuses_in_words():
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(1) == "exited with status 1"
    assert describe_exit(-200) == "was killed by signal 200"
