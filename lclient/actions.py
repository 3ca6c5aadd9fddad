"""What each lclient action does once its options are known, and the one place a failure
becomes one line on stderr and an exit status. No click here: the plain `-check UUID`,
`-add CMD`, `-kill UUID` and `-wait UUID` forms run these without it (lclient/main.py), and
the click command (lclient/cli.py) runs them for everything else."""

from __future__ import annotations

import sys

from lclient import errors
from lclient.client import JobsClient, Target
from lclient.format import (dumps, event_json, event_text, image_json, image_rows, images_table, job_json, job_text,
                            jobs_table, members_table, node_json, nodes_table, outcome)
from lclient.lazy import LazyModule
from lclient.specs import check_utf8, job_spec, parse_value, read_stdin, utf8
from lclient.units import parse_array, parse_count, parse_duration

pb = LazyModule("lclusterd.rpc.lclusterd_pb2")  # protobuf only when a request is built (not for -h)

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from typing import Callable

    ClientFactory = Callable[[Target], JobsClient]

# Every option's value when it is not given, as click passes them (one key per option of
# cli.py's command; tests/unit/test_lclient_cli.py holds the two equal).
DEFAULTS: dict = {
    "add": None, "check": None, "kill": None, "list_": False, "states": (), "limit": "0", "nodes": False,
    "images": False, "drain": None, "undrain": None, "events": False, "logs": None, "follow": False, "wait": None,
    "mem": None, "cpus": None, "pids": None, "timeout": None, "env": (), "stdin": None, "retries": None,
    "node": None, "image": None, "net": None, "publish": (), "volume": (), "workdir": None, "run_as": None, "all_nodes": False,
    "array": None, "after": None, "expand": False, "web": False, "token": False, "as_json": False, "server": None,
    "tls_dir": None, "user": None, "debug": False, "exec_": None,
}


def echo(text: str, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)  # as click.echo: a stream is read as it comes


def one_shot_client(target: Target) -> JobsClient:
    """lclient makes a call or two and exits: calls without gRPC where they can be (client.py)."""
    return JobsClient(target, one_shot=True)


def perform(action: str, o: dict, factory: ClientFactory | None = None) -> int:
    """Run `action` ("-add", "-check", ...) with the options `o`; its exit status."""
    check_utf8(o)
    client = (factory or one_shot_client)(Target.choose(o["server"], o["tls_dir"], o["user"]))
    try:
        return HANDLERS[action](client, o)
    finally:
        client.close()


def guarded(call: Callable[[], int], debug: bool) -> int:
    """`call`'s exit status; each failure one line on stderr and its status, never a traceback
    (unless `debug`)."""
    try:
        return call()
    except errors.ClientError as exc:
        echo(f"lclient: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        echo("\nlclient: interrupted", err=True)  # (after the ^C, as click's own Abort does)
        return errors.EXIT_INTERRUPTED
    except BrokenPipeError:
        return errors.EXIT_OK
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (unless -debug)
        if debug:
            import traceback

            traceback.print_exc()
        echo(f"lclient: internal error: {type(exc).__name__}: {exc}", err=True)
        return errors.EXIT_JOB


def job_exit_status(job: pb.Job) -> int:
    """The exit status `-wait` returns for a finished job."""
    if job.state == "EXITED" and job.HasField("exit_code"):
        return job.exit_code
    if job.state == "TIMED_OUT":
        return errors.EXIT_TIMEOUT
    if job.HasField("signal"):
        return 128 + job.signal
    if job.state == "OOM_KILLED":
        return 128 + 9
    return errors.EXIT_JOB


def _check(client: JobsClient, o: dict) -> int:
    job = client.check(o["check"])
    echo(dumps(job_json(job)) if o["as_json"] else job_text(job))
    return errors.EXIT_OK


def _kill(client: JobsClient, o: dict) -> int:
    job = client.kill(o["kill"])
    requested = " (kill requested)" if job.kill_requested else ""
    echo(dumps(job_json(job)) if o["as_json"] else f"{job.id} {outcome(job)}{requested}")
    if (job.is_pool or job.is_array) and not o["as_json"]:
        echo(members_table(job))
    return errors.EXIT_OK


def _list(client: JobsClient, o: dict) -> int:
    limit = parse_value("-limit", o["limit"], lambda t: parse_count(t, 0))
    jobs = client.list([s.upper() for s in o["states"]], limit, o["expand"])
    return _rows_or_table(o["as_json"], [job_json(job) for job in jobs], lambda: jobs_table(jobs))


def _nodes(client: JobsClient, o: dict) -> int:
    nodes = client.nodes()
    return _rows_or_table(o["as_json"], [node_json(node) for node in nodes], lambda: nodes_table(nodes))


def _images(client: JobsClient, o: dict) -> int:
    nodes = client.nodes()
    return _rows_or_table(o["as_json"], [image_json(*row) for row in image_rows(nodes)], lambda: images_table(nodes))


def _rows_or_table(as_json: bool, documents: list, table) -> int:
    """The read commands' output: one JSON document per line with -json, else the table."""
    for line in [dumps(document) for document in documents] if as_json else [table()]:
        echo(line)
    return errors.EXIT_OK


def _drain(client: JobsClient, o: dict) -> int:
    node = client.drain(o["drain"] or o["undrain"], bool(o["drain"]))
    echo(dumps(node_json(node)) if o["as_json"] else nodes_table([node]))
    return errors.EXIT_OK


def _events(client: JobsClient, o: dict) -> int:
    """One line (or JSON object) per change until Ctrl-C, which is how it ends: quietly, 130."""
    try:
        for event in client.events():
            echo(dumps(event_json(event)) if o["as_json"] else event_text(event))
    except KeyboardInterrupt:
        return errors.EXIT_INTERRUPTED
    return errors.EXIT_OK


def _wait_action(client: JobsClient, o: dict) -> int:
    if o["follow"]:
        return _follow_then_wait(client, o["wait"])
    timeout = parse_value("-timeout", o["timeout"], parse_duration) if o["timeout"] else None
    return _wait(client, o["wait"], timeout, o["as_json"])


def _add(client: JobsClient, o: dict) -> int:
    if o["add"] == "-":
        from lclient.many import add_batch  # (lazily: lclient starts fast)
        return add_batch(client, sys.stdin.buffer, job_spec({**o, "add": "-"}), o["as_json"], echo)
    array = None
    if o["array"] is not None:
        first, last, most = parse_value("-array", o["array"], parse_array)
        array = pb.ArraySpec(first=first, last=last, max_running=most)
    reply = client.add(job_spec(o), all_nodes=o["all_nodes"], array=array)
    if o["follow"]:  # stdout is the job's now
        echo(f"lclient: job {reply.id}", err=True)
        return _follow_then_wait(client, reply.id)
    echo(dumps(job_json(reply.job)) if o["as_json"] and not o["wait"] else reply.id)
    sys.stdout.flush()
    if o["wait"]:
        return _wait(client, reply.id, None, o["as_json"])
    return errors.EXIT_OK


def _follow_then_wait(client: JobsClient, job_id: str) -> int:
    """The job's output as it comes, then its end like -wait (the stream ends when the job does)."""
    _logs(client, job_id, True)
    return _wait(client, job_id, None, False)


def _wait(client: JobsClient, job_id: str, timeout: float | None, as_json: bool) -> int:
    job = client.wait(job_id, timeout)
    status = job_exit_status(job)
    if as_json:
        echo(dumps(job_json(job)))
    # one line for an end a script would want explained; a job's plain non-zero exit speaks for itself
    if status != 0 and (job.state != "EXITED" or job.is_pool or job.is_array or job.error):
        reason = f": {job.error}" if job.error else ""
        kind = "pool" if job.is_pool else "array" if job.is_array else "job"
        echo(f"lclient: {kind} {job.id} ended {outcome(job)}{reason}", err=True)
    return status


def _logs(client: JobsClient, job_id: str, follow: bool) -> int:
    for chunk in client.logs(job_id, follow):
        _write(chunk)
    return errors.EXIT_OK


def _write(chunk) -> None:
    """A LogChunk or ExecChunk's bytes to this stdout or stderr, as the job wrote them."""
    target = sys.stderr.buffer if chunk.stream == pb.LogChunk.STDERR else sys.stdout.buffer
    target.write(chunk.data)
    target.flush()


def _exec(client: JobsClient, o: dict) -> int:
    """-exec UUID CMD: the command's output as it comes, then its status as lclient's."""
    job_id, command = o["exec_"]
    stdin = read_stdin(o["stdin"]) if o["stdin"] else b""
    for chunk in client.exec(job_id, utf8("the -exec command", command), stdin):
        if chunk.ended:
            if chunk.error:
                echo(f"lclient: {command!r} did not run in job {job_id}: {chunk.error}", err=True)
                return errors.EXIT_NOT_RUN
            return chunk.exit_code if chunk.HasField("exit_code") else 128 + chunk.signal
        _write(chunk)
    echo(f"lclient: job {job_id}: the command's end was not told (the node went away)", err=True)
    return errors.EXIT_UNAVAILABLE


def _web(client: JobsClient, o: dict) -> int:
    reply = client.web_login()
    if o["as_json"]:
        echo(dumps({"url": reply.url, "login_expires_at": reply.login_expires_at, "token": reply.token,
                          "expires_at": reply.expires_at, "user": reply.user, "admin": reply.admin}))
    else:
        echo(reply.token if o["token"] else reply.url)
    return errors.EXIT_OK


HANDLERS: dict = {
    "-add": lambda client, o: _add(client, o), "-check": _check, "-kill": _kill, "-list": _list, "-nodes": _nodes,
    "-logs": lambda client, o: _logs(client, o["logs"], o["follow"]), "-wait": _wait_action,
    "-drain": _drain, "-undrain": _drain, "-web": _web, "-events": _events, "-images": _images,
    "-exec": _exec,
}


