"""Records in etcd are input: forged and malformed records written straight into a real etcd
(with etcdctl and the store, as anyone who can reach etcd could) under a real node, read by the
real lclient. Nothing is created outside the node's state directory, no other job's log
changes, -list still answers, -check of a bad record is one line, the daemon keeps running and
later jobs run."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

from lclusterd.cluster.keys import Keys
from lclusterd.cluster.kv import Put
from lclusterd.cluster.store import Store
from support.etcd_readers import etcd_prefix, etcd_records, etcdctl
from support.jobs import add, until
from support.processes import NodeProcess


def new_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def node(cluster) -> NodeProcess:
    return cluster.daemon(f"rec-{uuid.uuid4().hex[:6]}")


@pytest.fixture
def store(cluster):
    s = Store(cluster.etcd.endpoint)
    yield s
    s.close()


def finished_job(node: NodeProcess, command: str) -> str:
    job = add(node, command)
    assert node.lclient("-wait", job).returncode == 0
    return job


def put(store: Store, *pairs: tuple[str, bytes | str]) -> None:
    """One transaction of puts (a forged record and its queue or assignment entry together, so
    that the record's revision is also the entry's, as lclusterd writes them)."""
    store.txn([], [Put(key, value.encode() if isinstance(value, str) else value) for key, value in pairs])


def record_of(job: str, **changes) -> dict:
    data = {"id": job, "spec": {"command": "echo forged; echo forged >&2", "env": {}, "stdin_data": "", "retries": 0,
                                "node": ""}, "state": "QUEUED", "node": "", "attempt": 1, "created_at": 1.0,
            "history": [], "error": "", "owner": "root"}
    spec = changes.pop("spec", {})
    data.update(changes)
    data["spec"].update(spec)
    return data


def files_under(directory: Path) -> dict[str, bytes | str]:
    found = {}
    for path in sorted(directory.rglob("*")):
        found[str(path)] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return found


def test_malformed_records_are_skipped_and_every_call_still_answers(cluster, node, store):
    keys = Keys(cluster.prefix)
    mine = finished_job(node, "echo mine")
    bad = {name: new_id() for name in ("not-json", "no-spec", "wrong-types", "other-id", "not-utf8")}
    etcdctl(cluster.etcd.endpoint, "put", keys.job(bad["not-json"]), "not json {")
    put(store, (keys.job(bad["no-spec"]), json.dumps({"id": bad["no-spec"], "state": "QUEUED"})))
    put(store, (keys.job(bad["wrong-types"]), json.dumps(record_of(bad["wrong-types"], attempt="1", created_at="x"))))
    put(store, (keys.job(bad["other-id"]), json.dumps(record_of(mine, state="EXITED", exit_code=0))))
    put(store, (keys.job(bad["not-utf8"]), b'{"id": "' + bad["not-utf8"].encode() + b'", "spec": {"command": "\xff"}}'))
    put(store, (keys.job("../../../../tmp/x"), json.dumps(record_of("../../../../tmp/x"))),
        (keys.jobs_prefix + "\udcff" * 4, b"{}"), (keys.pool(bad["no-spec"]), b"[]"))

    listed = node.lclient("-list", "-json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [mine]
    assert node.lclient("-list").returncode == 0
    reasons = {"not-json": "the record is not JSON (Expecting value: line 1 column 1 (char 0))",
               "no-spec": "the record lacks the field 'spec'",
               "wrong-types": "the record field 'attempt' is a string, not a 32-bit integer",
               "other-id": f"the record under the key {bad['other-id']} names job id '{mine}'",
               "not-utf8": "the record is not JSON ("}
    for name, job in bad.items():
        for action in ("-check", "-wait", "-kill", "-logs"):
            result = node.lclient(action, job)
            line = f"lclient: job {job} has a malformed record in etcd, which lclusterd ignores ({reasons[name]}"
            assert (result.returncode, result.stdout) == (1, "") and result.stderr.startswith(line), (action, result.stderr)
            assert result.stderr.count("\n") == 1
    assert node.lclient("-check", mine).returncode == 0
    later = add(node, "echo later")
    assert node.lclient("-wait", later).returncode == 0 and node.lclient("-logs", later).stdout == "later\n"
    assert node.process.poll() is None
    logged = [line for line in node.log().splitlines() if "ignoring the value of" in line]
    for job in bad.values():  # once per key and revision, however often it was read
        assert len([line for line in logged if keys.job(job) + " " in line]) == 1, logged


def test_forged_records_never_write_outside_the_state_dir_nor_into_another_jobs_log(cluster, node, store, tmp_path):
    keys = Keys(cluster.prefix)
    logs = node.state_dir / "logs"
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside / "created-through-the-symlink", outside / "m.out")  # waiting for a root daemon to follow it
    pathlike = os.path.relpath(outside / "m", logs)
    tmp_name = f"../../../../../../../../tmp/lclusterd-forged-{uuid.uuid4().hex[:8]}"
    before_outside = files_under(outside)
    mine = finished_job(node, "echo mine; echo mine >&2")
    other = finished_job(node, "echo other; echo other >&2")  # (both streams written: both files made)
    logs_before = {job: (logs / f"{job}.out").read_bytes() + (logs / f"{job}.err").read_bytes() for job in (mine, other)}

    forged = new_id()
    for job_id in (pathlike, tmp_name):
        record = json.dumps(record_of(job_id, state="ASSIGNED", node=node.name))
        put(store, (keys.job(forged), record), (keys.assign(node.name, forged), record))  # another job's id in the record
        put(store, (keys.queue(forged), record))
        put(store, (keys.assign(node.name, job_id), record))  # the path in the key itself
    reused = json.dumps(record_of(mine, state="ASSIGNED", node=node.name, attempt=2))
    put(store, (keys.job(mine), reused), (keys.assign(node.name, mine), reused))  # a finished job's id, assigned again
    requeued = json.dumps(record_of(other, attempt=2))
    put(store, (keys.job(other), requeued), (keys.queue(other), requeued))  # and one queued again, for the prime

    for job in (mine, other):  # each forged attempt ends, refused by the node that ran the real one
        until(lambda: etcd_records(cluster)[job]["state"] == "FAILED", f"the forged attempt of {job} to be refused")
        assert "belong to a job that has ended" in etcd_records(cluster)[job]["error"]
    assert node.stop() == 0
    node.start()  # a restart reconciles what is left: nothing forged runs then either
    later = add(node, "echo later; echo later >&2")
    assert node.lclient("-wait", later).returncode == 0
    assert node.lclient("-list").returncode == 0 and node.process.poll() is None

    assert files_under(outside) == before_outside and not Path("/tmp", Path(tmp_name).name + ".out").exists()
    assert {job: (logs / f"{job}.out").read_bytes() + (logs / f"{job}.err").read_bytes() for job in (mine, other)} == logs_before
    assert sorted(p.name for p in logs.iterdir()) == sorted(f"{j}.{s}" for j in (mine, other, later) for s in ("out", "err"))
    assert not etcd_prefix(cluster, f"assign/{node.name}")  # the restart removed the forged assignments, paths too
