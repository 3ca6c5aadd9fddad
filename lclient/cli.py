"""`lclient`: the original's `-add 'cmd'`, `-check UUID`, `-kill UUID`, plus -list, -nodes,
-logs, -wait, `-add 'cmd' -follow` (run it: its output as it comes, then its exit status),
`-add 'cmd' -all-nodes` pools and `-add 'cmd' -array N` arrays (whose uuid -check, -wait and
-kill take), `-add -` (a job per line of stdin), `-after`, and -events (job state changes). One action per call; each error is one line on stderr and an exit status:

    0   ok (for -wait: the job's own exit code, 128+N when signal N ended it; for a pool, that
        of its first member, by node, that did not exit 0)
    1   the job failed, was not found, or cannot be changed (kill of a finished job)
    2   usage error or invalid input (malformed uuid, empty command, bad limit value)
    3   lclusterd unreachable, or etcd unavailable behind it
    4   refused: not known to the node (no or a bad certificate, not in the group lclusterd),
        or not yours to do (another user's job, -drain/-undrain without being an admin)
    124 -wait timed out (and a job that ended TIMED_OUT)
"""

from __future__ import annotations

import sys
from typing import Callable

import click

from lclient import errors
from lclient.client import SERVER_ENV, TLS_DIR_ENV, USER_ENV, JobsClient, Target
from lclient.format import (dumps, event_json, event_text, image_json, image_rows, images_table, job_json, job_text,
                            jobs_table, members_table, node_json, nodes_table, outcome)
from lclient.lazy import LazyModule
from lclient.specs import check_utf8, job_spec, parse_value
from lclient.units import parse_array, parse_count, parse_duration
from lclusterd.states import STATES

pb = LazyModule("lclusterd.rpc.lclusterd_pb2")  # protobuf only when a request is built (not for -h)

ACTIONS = ("-add", "-check", "-kill", "-list", "-nodes", "-logs", "-wait", "-drain", "-undrain", "-web", "-events",
           "-images")
_WAIT_FOR_ADDED = "\0added"  # -wait given with no uuid: wait for the job this call adds

ClientFactory = Callable[[Target], JobsClient]


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


def _opt(*names: str, **kw):
    return click.option(*names, **kw)


@click.command(context_settings={"help_option_names": ["-h", "-help", "--help"]}, add_help_option=True)
@_opt("-add", "--add", "add", metavar="CMD", help="Queue CMD (run as /bin/sh -c CMD); prints the job's uuid alone.")
@_opt("-check", "--check", "check", metavar="UUID",
      help="Show the job's state and details (for a pool: its state and a row per member).")
@_opt("-kill", "--kill", "kill", metavar="UUID", help="Stop the job (a queued one is cancelled); for a pool, every member.")
@_opt("-list", "--list", "list_", is_flag=True, help="List jobs, oldest first.")
@_opt("-state", "--state", "states", multiple=True, metavar="STATE", help="With -list: only jobs in STATE (repeatable).",
      shell_complete=lambda _ctx, _param, incomplete: [s for s in STATES if s.startswith(incomplete.upper())])
@_opt("-limit", "--limit", "limit", default="0", metavar="N", help="With -list: only the newest N jobs.")
@_opt("-nodes", "--nodes", "nodes", is_flag=True, help="List the cluster's nodes.")
@_opt("-images", "--images", "images", is_flag=True, help="List every node's images; busybox is its rootfs.")
@_opt("-drain", "--drain", "drain", metavar="NODE", help="Stop assigning new jobs to NODE; its jobs run to the end.")
@_opt("-undrain", "--undrain", "undrain", metavar="NODE", help="Let NODE take new jobs again.")
@_opt("-events", "--events", "events", is_flag=True,
      help="Print each change of a job's state as it happens, one line each (yours, or everyone's for an admin), "
           "until Ctrl-C.")
@_opt("-logs", "--logs", "logs", metavar="UUID", help="Print the job's stdout and stderr.")
@_opt("-follow", "--follow", "follow", is_flag=True,
      help="With -logs: keep printing until the job ends. With -add or -wait UUID: print the job's output as it "
           "comes (stdout to stdout, stderr to stderr), then exit with its status like -wait; -add prints the "
           "uuid on stderr then.")
@_opt("-wait", "--wait", "wait", is_flag=False, flag_value=_WAIT_FOR_ADDED, default=None, metavar="UUID",
      help="Block until the job ends and exit with its status; with -add, wait for the new job. For a pool: until "
           "every member ends; 0 if all exited 0, else the status of the first member (by node) that did not.")
@_opt("-mem", "--mem", "mem", metavar="SIZE", help="With -add: memory limit, e.g. 64M, 1G.")
@_opt("-cpus", "--cpus", "cpus", metavar="N", help="With -add: CPU limit in cores, e.g. 0.5.")
@_opt("-pids", "--pids", "pids", metavar="N", help="With -add: most processes (default: the node's, 1024).")
@_opt("-timeout", "--timeout", "timeout", metavar="DURATION",
      help="With -add: the job's run-time limit (TIMED_OUT after it), e.g. 30s, 5m. With -wait UUID: how long to wait.")
@_opt("-env", "--env", "env", multiple=True, metavar="NAME=VALUE", help="With -add: an environment variable (repeatable).")
@_opt("-stdin", "--stdin", "stdin", metavar="FILE", help="With -add: the job's standard input ('-' = this one's).",
      type=click.Path(allow_dash=True))  # (a file name: the shell completes it)
@_opt("-retries", "--retries", "retries", metavar="N", help="With -add: extra attempts if its node is lost (default 0).")
@_opt("-node", "--node", "node", metavar="NAME", help="With -add: run it on node NAME only (it waits while NAME is full or away).")
@_opt("-image", "--image", "image", metavar="NAME",
      help="With -add: run it in image NAME, on a node that has it (lclient -images); its Env and WorkingDir are "
           "the job's defaults, and with an empty command (-add '') its Entrypoint and Cmd are the command.")
@_opt("-net", "--net", "net", metavar="none|bridge",
      help="With -add: the job's network: none (loopback only, the default) or bridge (an address on its node's "
           "bridge, outbound NAT; -check shows the address).")
@_opt("-publish", "--publish", "publish", multiple=True, metavar="HOSTPORT:PORT[/udp]",
      help="With -add -net bridge: forward HOSTPORT of the node's addresses (127.0.0.1 included) to the job's PORT "
           "(repeatable).")
@_opt("-volume", "--volume", "volume", multiple=True, metavar="HOST:PATH[:ro]",
      help="With -add: bind the node's directory HOST (under one of its --volume-root) at PATH in the job, "
           "read-only with :ro (repeatable).")
@_opt("-workdir", "--workdir", "workdir", metavar="DIR",
      help="With -add: the command's working directory (default: its image's WorkingDir, or /).")
@_opt("-all-nodes", "--all-nodes", "all_nodes", is_flag=True,
      help="With -add: a pool, one copy on every ready node (not draining); prints the pool's uuid alone, "
           "which -check, -wait and -kill take.")
@_opt("-array", "--array", "array", metavar="N|A-B[%K]",
      help="With -add: an array, one member per index (0..N-1, or A..B), each with LCLUSTER_ARRAY_INDEX and "
           "LCLUSTER_ARRAY_ID in its environment; %K: at most K members running at once. Prints the array's uuid.")
@_opt("-after", "--after", "after", metavar="UUID[,UUID...]",
      help="With -add: start only once these jobs (or pools, arrays) exited 0; if one ends otherwise, CANCELLED.")
@_opt("-expand", "--expand", "expand", is_flag=True, help="With -list: a row per array member (not one per array).")
@_opt("-web", "--web", "web", is_flag=True,
      help="Print a link that logs you in to the node's web page as yourself (good once, for 5 minutes; the "
           "session lasts 8 hours).")
@_opt("-token", "--token", "token", is_flag=True,
      help="With -web: print a token for the web page's JSON API instead (curl -H \"Authorization: Bearer TOKEN\").")
@_opt("-json", "--json", "as_json", is_flag=True, help="Machine-readable output (one JSON document per line).")
@_opt("-server", "--server", "server", metavar="HOST:PORT",
      help=f"The lclusterd to talk to: HOST:PORT or unix:PATH (also ${SERVER_ENV}; default: the local node's socket "
           "/var/lib/lclusterd/lclusterd.sock when you may use it, else 127.0.0.1:64051).")
@_opt("-tls-dir", "--tls-dir", "tls_dir", metavar="DIR",
      help=f"Mutual TLS over TCP with DIR/ca.pem and your DIR/USER.pem, DIR/USER-key.pem (also ${TLS_DIR_ENV}).")
@_opt("-user", "--user", "user", metavar="NAME",
      help=f"Whose certificate in -tls-dir (also ${USER_ENV}; default: your login name).")
@_opt("-debug", "--debug", "debug", is_flag=True, help="Show more when something fails.")
@click.pass_context
def cli(ctx: click.Context, **o) -> int:
    """Submit and manage lclusterd jobs. Exactly one of -add, -check, -kill, -list, -nodes,
    -logs, -wait (or -add with -wait), -drain, -undrain, -web, -events, -images. -add CMD -all-nodes queues a pool, one
    copy of CMD on every ready node, under one uuid that -check, -wait and -kill take.

    Exit status: 0 ok (-wait: the job's own status, 128+N for signal N); 1 job failed or not
    found; 2 usage or invalid input; 3 lclusterd or etcd unreachable; 4 refused (who you are,
    or not yours to do); 124 -wait timed out."""
    factory: ClientFactory = ctx.obj or _one_shot_client
    keys = ("add", "check", "kill", "list_", "nodes", "logs", "wait", "drain", "undrain", "web", "events", "images")
    chosen = [name for name, key in zip(ACTIONS, keys)
              if o[key] not in (None, False)]
    if chosen == ["-add", "-wait"] and o["wait"] == _WAIT_FOR_ADDED:
        chosen = ["-add"]
    if len(chosen) != 1:
        given = ", ".join(chosen) if chosen else "none"
        raise click.UsageError(f"give exactly one of {', '.join(ACTIONS)} (given: {given}); see lclient -help")
    if o["wait"] == _WAIT_FOR_ADDED and o["add"] is None:
        raise click.UsageError("-wait needs a job uuid (or -add CMD)")
    action = chosen[0]
    _check_applicable(action, o)
    check_utf8(o)
    client = factory(Target.choose(o["server"], o["tls_dir"], o["user"]))
    try:
        return HANDLERS[action](client, o)
    finally:
        client.close()


def _one_shot_client(target: Target) -> JobsClient:
    """lclient makes a call or two and exits: calls without gRPC where they can be (client.py)."""
    return JobsClient(target, one_shot=True)


def _check(client: JobsClient, o: dict) -> int:
    job = client.check(o["check"])
    click.echo(dumps(job_json(job)) if o["as_json"] else job_text(job))
    return errors.EXIT_OK


def _kill(client: JobsClient, o: dict) -> int:
    job = client.kill(o["kill"])
    requested = " (kill requested)" if job.kill_requested else ""
    click.echo(dumps(job_json(job)) if o["as_json"] else f"{job.id} {outcome(job)}{requested}")
    if (job.is_pool or job.is_array) and not o["as_json"]:
        click.echo(members_table(job))
    return errors.EXIT_OK


def _list(client: JobsClient, o: dict) -> int:
    limit = parse_value("-limit", o["limit"], lambda t: parse_count(t, 0))
    jobs = client.list([s.upper() for s in o["states"]], limit, o["expand"])
    if o["as_json"]:
        for job in jobs:
            click.echo(dumps(job_json(job)))
    else:
        click.echo(jobs_table(jobs))
    return errors.EXIT_OK


def _nodes(client: JobsClient, o: dict) -> int:
    nodes = client.nodes()
    if o["as_json"]:
        for node in nodes:
            click.echo(dumps(node_json(node)))
    else:
        click.echo(nodes_table(nodes))
    return errors.EXIT_OK


def _images(client: JobsClient, o: dict) -> int:
    nodes = client.nodes()
    for line in [dumps(image_json(*row)) for row in image_rows(nodes)] if o["as_json"] else [images_table(nodes)]:
        click.echo(line)
    return errors.EXIT_OK


def _drain(client: JobsClient, o: dict) -> int:
    node = client.drain(o["drain"] or o["undrain"], bool(o["drain"]))
    click.echo(dumps(node_json(node)) if o["as_json"] else nodes_table([node]))
    return errors.EXIT_OK


def _events(client: JobsClient, o: dict) -> int:
    """One line (or JSON object) per change until Ctrl-C, which is how it ends: quietly, 130."""
    try:
        for event in client.events():
            click.echo(dumps(event_json(event)) if o["as_json"] else event_text(event))
    except KeyboardInterrupt:
        return errors.EXIT_INTERRUPTED
    return errors.EXIT_OK


def _wait_action(client: JobsClient, o: dict) -> int:
    if o["follow"]:
        return _follow_then_wait(client, o["wait"])
    timeout = parse_value("-timeout", o["timeout"], parse_duration) if o["timeout"] else None
    return _wait(client, o["wait"], timeout, o["as_json"])


def _check_applicable(action: str, o: dict) -> None:
    only_add = {"mem": "-mem", "cpus": "-cpus", "pids": "-pids", "env": "-env", "stdin": "-stdin", "retries": "-retries",
                "node": "-node", "image": "-image", "net": "-net", "publish": "-publish", "volume": "-volume",
                "workdir": "-workdir"}
    for key, name in only_add.items():
        if o[key] and action != "-add":
            raise click.UsageError(f"{name} goes with -add")
    if o["timeout"] and action not in ("-add", "-wait"):
        raise click.UsageError("-timeout goes with -add or -wait")
    if o["follow"] and action not in ("-logs", "-add", "-wait"):
        raise click.UsageError("-follow goes with -logs, -add or -wait")
    if o["follow"] and action != "-logs":
        if o["all_nodes"]:
            raise click.UsageError("-follow prints one job's output; leave out -all-nodes (or -logs -follow a member)")
        if o["as_json"]:
            raise click.UsageError("-follow prints the job's output; leave out -json")
        if action == "-wait" and o["timeout"]:
            raise click.UsageError("-follow waits until the job ends; leave out -timeout")
    if (o["states"] or o["limit"] != "0") and action != "-list":
        raise click.UsageError("-state and -limit go with -list")
    if o["array"] is not None or o["after"] is not None or o["expand"] or o["add"] == "-":
        from lclient.many import check_options  # (lazily: lclient starts fast)
        check_options(action, o)
    if o["token"] and action != "-web":
        raise click.UsageError("-token goes with -web")
    if o["all_nodes"] and action != "-add":
        raise click.UsageError("-all-nodes goes with -add")
    if o["all_nodes"] and o["node"]:
        raise click.UsageError("-all-nodes runs a copy on every ready node; leave out -node")


def _add(client: JobsClient, o: dict) -> int:
    if o["add"] == "-":
        from lclient.many import add_batch  # (lazily: lclient starts fast)
        return add_batch(client, sys.stdin.buffer, job_spec({**o, "add": "-"}), o["as_json"], click.echo)
    array = None
    if o["array"] is not None:
        first, last, most = parse_value("-array", o["array"], parse_array)
        array = pb.ArraySpec(first=first, last=last, max_running=most)
    reply = client.add(job_spec(o), all_nodes=o["all_nodes"], array=array)
    if o["follow"]:  # stdout is the job's now
        click.echo(f"lclient: job {reply.id}", err=True)
        return _follow_then_wait(client, reply.id)
    click.echo(dumps(job_json(reply.job)) if o["as_json"] and not o["wait"] else reply.id)
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
        click.echo(dumps(job_json(job)))
    # one line for an end a script would want explained; a job's plain non-zero exit speaks for itself
    if status != 0 and (job.state != "EXITED" or job.is_pool or job.is_array or job.error):
        reason = f": {job.error}" if job.error else ""
        kind = "pool" if job.is_pool else "array" if job.is_array else "job"
        click.echo(f"lclient: {kind} {job.id} ended {outcome(job)}{reason}", err=True)
    return status


def _logs(client: JobsClient, job_id: str, follow: bool) -> int:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    for chunk in client.logs(job_id, follow):
        target = err if chunk.stream == pb.LogChunk.STDERR else out
        target.write(chunk.data)
        target.flush()
    return errors.EXIT_OK


def _web(client: JobsClient, o: dict) -> int:
    reply = client.web_login()
    if o["as_json"]:
        click.echo(dumps({"url": reply.url, "login_expires_at": reply.login_expires_at, "token": reply.token,
                          "expires_at": reply.expires_at, "user": reply.user, "admin": reply.admin}))
    else:
        click.echo(reply.token if o["token"] else reply.url)
    return errors.EXIT_OK


HANDLERS: dict[str, Callable[[JobsClient, dict], int]] = {
    "-add": lambda client, o: _add(client, o), "-check": _check, "-kill": _kill, "-list": _list, "-nodes": _nodes,
    "-logs": lambda client, o: _logs(client, o["logs"], o["follow"]), "-wait": _wait_action,
    "-drain": _drain, "-undrain": _drain, "-web": _web, "-events": _events, "-images": _images,
}


def run(argv: list[str], client_factory: ClientFactory | None = None) -> int:
    """Run lclient with `argv`; returns the exit status. Never raises (but SystemExit)."""
    debug = "-debug" in argv or "--debug" in argv
    try:
        result = cli.main(args=argv, prog_name="lclient", standalone_mode=False, obj=client_factory)
    except click.exceptions.Exit as exc:  # -help
        return exc.exit_code
    except click.ClickException as exc:
        message = exc.format_message().replace("\n", " ")
        click.echo(f"lclient: {message}", err=True)
        return errors.EXIT_USAGE
    except click.Abort:
        click.echo("lclient: interrupted", err=True)
        return 130
    except errors.ClientError as exc:
        click.echo(f"lclient: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("lclient: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return errors.EXIT_OK
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (unless -debug)
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(f"lclient: internal error: {type(exc).__name__}: {exc}", err=True)
        return errors.EXIT_JOB
    return result if isinstance(result, int) else errors.EXIT_OK


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
