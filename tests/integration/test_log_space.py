"""--max-log-space with a real node: jobs that write much cannot fill the node's disk; past the
limit, the output of the jobs that ended first is replaced by one line saying so (their records
stay), the newest jobs' output is whole, and a running job's is never touched."""

from __future__ import annotations

from support.jobs import add, check, until

NOTE = "[lclusterd: this job's output was removed at "
WRITE_100K = "head -c 102400 /dev/zero | tr '\\0' a"


def test_the_logs_of_a_node_stay_within_its_limit(cluster):
    node = cluster.daemon("space", extra=["--max-log-space", "256K"])
    running = add(node, f"{WRITE_100K}; sleep 300")
    ended = []
    for _ in range(4):
        result = node.lclient("-add", WRITE_100K, "-wait", timeout=120)
        assert result.returncode == 0, result.stderr
        ended.append(result.stdout.strip())
    until(lambda: node.lclient("-logs", ended[2]).stdout.startswith(NOTE), "the third job's output to go", timeout=60)
    for job in ended[:3]:  # 500K: the first three went, down to 90 % of 256K (the running job's 100K counts)...
        logs = node.lclient("-logs", job).stdout
        assert logs.startswith(NOTE) and "of node space within --max-log-space 256.0 KiB]" in logs, logs
        assert check(node, job)["state"] == "EXITED"  # the record stays
    for job in [ended[3], running]:  # ...the newest and the running job's output is whole
        assert node.lclient("-logs", job).stdout == "a" * 102400
    assert "job(s) that ended first" in node.log()  # said in the log (in one pass or more)
    assert node.lclient("-kill", running).returncode == 0
