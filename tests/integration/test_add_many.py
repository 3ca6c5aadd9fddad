"""`lclient -add -`: one job per line of stdin in one call, through a real node: blank lines
skipped, the uuids printed one per line in the order of the lines, the options applied to each;
a bad line (one the client refuses, or one the node refuses) refuses the whole batch before
anything is queued."""

from __future__ import annotations

import json
import os
import subprocess

from support.etcd_readers import etcd_prefix, etcd_records
from support.jobs import check
from support.processes import LCLIENT


def test_one_job_per_line_in_order_blank_lines_skipped(cluster):
    a = cluster.daemon("a", extra=["--capacity", "4"])
    added = a.lclient("-add", "-", "-env", "WHO=batch", stdin=b"echo one $WHO\n\n   \necho two $WHO\r\necho 'three'\n")
    assert added.returncode == 0 and added.stderr == ""
    ids = added.stdout.split("\n")
    assert len(ids) == 4 and ids[3] == "" and all(len(i) == 32 for i in ids[:3])
    for job, text in zip(ids, ("one batch", "two batch", "three")):
        assert a.lclient("-wait", job).returncode == 0
        assert a.lclient("-logs", job).stdout == text + "\n"
        assert check(a, job)["command"] in ("echo one $WHO", "echo two $WHO", "echo 'three'")
    assert set(etcd_records(cluster)) == set(ids[:3])
    as_json = a.lclient("-add", "-", "-json", stdin=b"true\nfalse\n")
    jobs = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(j["command"], j["state"] in ("QUEUED", "ASSIGNED", "RUNNING", "EXITED")) for j in jobs] == [("true", True), ("false", True)]


def test_a_bad_line_refuses_the_whole_batch_before_anything_is_queued(cluster):
    a = cluster.daemon("a")
    not_utf8 = subprocess.run([LCLIENT, "-add", "-"], input=b"echo fine\n\xff\n", capture_output=True, timeout=60,
                              env={**os.environ, "LCLUSTER_SERVER": a.server})  # (bytes: lclient() sends text)
    assert (not_utf8.returncode, not_utf8.stdout) == (2, b"")
    assert not_utf8.stderr == b"lclient: line 2 of stdin is not valid UTF-8 (byte 0xff at offset 0)\n"
    too_big = a.lclient("-add", "-", stdin=b"echo fine\n\necho " + b"x" * 70000 + b"\n")  # the node refuses it
    assert (too_big.returncode, too_big.stdout) == (2, "")
    assert too_big.stderr == "lclient: job 2 of the batch: the command is 70005 bytes, more than the limit of 64 KiB\n"
    reserved = a.lclient("-add", "-", "-env", "LCLUSTER_ARRAY_INDEX=7", stdin=b"true\n")
    assert (reserved.returncode, reserved.stderr) == (2, "lclient: job 1 of the batch: environment variable "
                                                         "LCLUSTER_ARRAY_INDEX is reserved: lclusterd sets "
                                                         "LCLUSTER_ARRAY_* for array members\n")
    empty = a.lclient("-add", "-", stdin=b"\n  \n")
    assert (empty.returncode, empty.stderr) == (2, "lclient: -add - found no command on stdin (one per line)\n")
    mixed = a.lclient("-add", "-", "-array", "3", stdin=b"true\n")
    assert (mixed.returncode, mixed.stderr) == (2, "lclient: -add - queues one job per line of stdin; leave out -array\n")
    assert etcd_prefix(cluster, "jobs") == {} and etcd_prefix(cluster, "queue") == {}
