"""`lclient -events` through real nodes: every change of a job's state as it happens, one line
(or JSON object) each, from the node's jobs/ watch; a user sees their own jobs' changes, an
admin everyone's; Ctrl-C ends it quietly (130)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from support.jobs import add, until
from support.processes import LCLIENT, Cluster
from support.users import make_user, reachable_by_others, remove_user

ANN, BOB = "lcev-ann", "lcev-bob"  # both in the group lclusterd


class Events:
    """A running `lclient -events [-json]` (as root, or as `user` through runuser); its stdout
    lines as they come."""

    def __init__(self, server: str, *args: str, user: str | None = None):
        argv = [LCLIENT, "-events", *args, "-server", server]
        if user is not None:
            assert reachable_by_others(LCLIENT)
            argv = ["runuser", "-u", user, "--", "env", "-i", "PATH=/usr/bin:/bin", *argv]
        env = {k: v for k, v in os.environ.items() if k != "LCLUSTER_SERVER"}
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        start_new_session=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def objects(self) -> list[dict]:
        return [json.loads(line) for line in list(self.lines)]

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C (SIGINT to its process group, as a terminal sends it); exit status and stderr."""
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(30)
        self._reader.join(10)
        return code, self.process.stderr.read()


def states_of(objects: list[dict], job: str) -> list[str]:
    return [o["state"] for o in objects if o["id"] == job]


def test_events_stream_every_state_change_in_order(cluster):
    node = cluster.daemon(f"ev-{uuid.uuid4().hex[:6]}")
    watching = Events(node.server, "-json")
    text = Events(node.server)
    listening(watching, lambda: add(node, "true"))
    listening(text, lambda: add(node, "true"))
    ok = add(node, "echo hi", "-wait")
    failed = node.lclient("-add", "exit 3", "-wait").stdout.strip()
    slow = node.lclient("-add", "sleep 30", "-timeout", "1s", "-wait").stdout.strip()
    until(lambda: states_of(watching.objects(), slow)[-1:] == ["TIMED_OUT"], "the timeout to be streamed")
    objects = watching.objects()
    # every job passes ASSIGNED (placed at once on an idle prime), RUNNING, then its end
    assert states_of(objects, ok) == ["ASSIGNED", "RUNNING", "EXITED"], objects
    assert states_of(objects, failed) == ["ASSIGNED", "RUNNING", "EXITED"], objects
    assert states_of(objects, slow) == ["ASSIGNED", "RUNNING", "TIMED_OUT"], objects
    end = [o for o in objects if o["id"] == failed][-1]
    assert (end["exit_code"], end["previous_state"], end["node"], end["owner"]) == (3, "RUNNING", node.name, "root")
    assert all(o["schema_version"] == 1 and o["time"] > 0 for o in objects)
    times = [o["time"] for o in objects if o["id"] == slow]
    assert times == sorted(times)
    until(lambda: len([line for line in text.lines if slow in line]) == 3, "the text stream to have the same")
    line = next(line for line in text.lines if failed in line and "EXITED" in line)
    assert line.split("  ", 1)[1] == f"{failed}  EXITED (exit code 3)  node={node.name}  owner=root", line
    for stream in (watching, text):
        assert stream.interrupt() == (130, "")  # Ctrl-C ends it quietly, no traceback


def listening(stream: Events, add_marker) -> None:
    """Wait until `stream` listens: add marker jobs until one shows in it (a stream sees only
    the changes after it started), then forget what it printed so far."""
    seen: set[str] = set()

    def shown() -> bool:
        seen.add(add_marker())
        return any(job in line for line in list(stream.lines) for job in seen)
    until(shown, "the events stream to listen", timeout=30)
    until(lambda: any("EXITED" in line and job in line for line in list(stream.lines) for job in seen),
          "the marker job's end", timeout=30)
    stream.lines.clear()


@pytest.fixture
def users():
    made = [make_user(ANN, True), make_user(BOB, True)]
    yield made
    for name in made:
        remove_user(name)


@pytest.fixture
def place():
    """A directory other users can traverse (for the node's socket)."""
    directory = Path(tempfile.mkdtemp(prefix="lclusterd-events-", dir="/var/tmp"))
    os.chmod(directory, 0o711)
    yield directory
    subprocess.run(["rm", "-rf", str(directory)])


def test_users_get_their_own_jobs_events_and_admins_all(etcd, users, place):
    cluster = Cluster(place, etcd)
    try:
        name = f"ev-{uuid.uuid4().hex[:6]}"
        (place / name).mkdir(mode=0o711)
        node = cluster.daemon(name, directory=place / name)
        ann, bob, root = (Events(node.socket, "-json", user=ANN), Events(node.socket, "-json", user=BOB),
                          Events(node.socket, "-json"))
        listening(ann, lambda: _as(ANN, node, "-add", "true"))
        listening(bob, lambda: _as(BOB, node, "-add", "true"))
        listening(root, lambda: add(node, "true"))
        mine = _as(ANN, node, "-add", "echo ann", "-wait")
        theirs = _as(BOB, node, "-add", "echo bob", "-wait")
        until(lambda: states_of(root.objects(), theirs)[-1:] == ["EXITED"], "root to see bob's job end")
        until(lambda: states_of(bob.objects(), theirs)[-1:] == ["EXITED"], "bob to see his job end")
        until(lambda: states_of(ann.objects(), mine)[-1:] == ["EXITED"], "ann to see her job end")
        assert {o["id"] for o in ann.objects()} == {mine}
        assert {o["id"] for o in bob.objects()} == {theirs}
        assert {o["id"] for o in root.objects()} == {mine, theirs}
        assert {o["owner"] for o in root.objects()} == {ANN, BOB}
        for stream in (ann, bob, root):
            os.killpg(stream.process.pid, signal.SIGTERM)
            stream.process.wait(30)
    finally:
        cluster.close()


def _as(user: str, node, *args: str) -> str:
    result = subprocess.run(["runuser", "-u", user, "--", "env", "-i", "PATH=/usr/bin:/bin", LCLIENT, *args,
                             "-server", node.socket], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()

