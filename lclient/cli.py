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

import click

from lclient import errors
from lclient.actions import echo, guarded, perform
from lclient.client import SERVER_ENV, TLS_DIR_ENV, USER_ENV
from lclusterd.states import STATES

TYPE_CHECKING = False  # (typing.TYPE_CHECKING without importing typing)
if TYPE_CHECKING:
    from lclient.actions import ClientFactory

ACTIONS = ("-add", "-check", "-kill", "-list", "-nodes", "-logs", "-wait", "-drain", "-undrain", "-web", "-events",
           "-images", "-exec")
_WAIT_FOR_ADDED = "\0added"  # -wait given with no uuid: wait for the job this call adds


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
@_opt("-exec", "--exec", "exec_", nargs=2, default=None, metavar="UUID CMD",
      help="Run CMD (/bin/sh -c CMD) inside the running job UUID, as one of its processes: its namespaces, cgroup, "
           "user and limits (its input: -stdin, else none). Prints its output as it comes and exits with its "
           "status (128+N for signal N).")
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
@_opt("-stdin", "--stdin", "stdin", metavar="FILE", help="With -add or -exec: the job's (or the command's) standard "
      "input ('-' = this one's).",
      type=click.Path(allow_dash=True))  # (a file name: the shell completes it)
@_opt("-retries", "--retries", "retries", metavar="N", help="With -add: extra attempts if its node is lost (default 0).")
@_opt("-node", "--node", "node", metavar="NAME", help="With -add: run it on node NAME only (it waits while NAME is full or away).")
@_opt("-image", "--image", "image", metavar="NAME",
      help="With -add: run it in image NAME, on a node that has it (lclient -images); its Env and WorkingDir are "
           "the job's defaults, it runs as its User, and with an empty command (-add '') its Entrypoint and Cmd "
           "are the command.")
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
@_opt("-run-as", "--run-as", "run_as", metavar="USER[:GROUP]",
      help="With -add: run the command as USER (and GROUP) inside the job: names from the job's own /etc/passwd "
           "and /etc/group, or numbers (default: its image's User, or the job's root).")
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
    -logs, -wait (or -add with -wait), -drain, -undrain, -web, -events, -images, -exec. -add CMD -all-nodes queues a pool, one
    copy of CMD on every ready node, under one uuid that -check, -wait and -kill take.

    Exit status: 0 ok (-wait: the job's own status, 128+N for signal N; -exec: the command's,
    127 if it could not run); 1 job failed or not found; 2 usage or invalid input; 3 lclusterd
    or etcd unreachable; 4 refused (who you are, or not yours to do); 124 -wait timed out."""
    keys = ("add", "check", "kill", "list_", "nodes", "logs", "wait", "drain", "undrain", "web", "events", "images",
            "exec_")
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
    return perform(action, o, ctx.obj)


def _check_applicable(action: str, o: dict) -> None:
    if o["stdin"] and action not in ("-add", "-exec"):
        raise click.UsageError("-stdin goes with -add or -exec")
    only_add = {"mem": "-mem", "cpus": "-cpus", "pids": "-pids", "env": "-env", "retries": "-retries",
                "node": "-node", "image": "-image", "net": "-net", "publish": "-publish", "volume": "-volume",
                "workdir": "-workdir", "run_as": "-run-as"}
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


def run(argv: list[str], client_factory: ClientFactory | None = None) -> int:
    """Run lclient with `argv`; returns the exit status. Never raises (but SystemExit)."""
    return guarded(lambda: _parsed_and_run(argv, client_factory), debug="-debug" in argv or "--debug" in argv)


def _parsed_and_run(argv: list[str], client_factory: ClientFactory | None) -> int:
    try:
        result = cli.main(args=argv, prog_name="lclient", standalone_mode=False, obj=client_factory)
    except click.exceptions.Exit as exc:  # -help
        return exc.exit_code
    except click.ClickException as exc:
        message = exc.format_message().replace("\n", " ")
        echo(f"lclient: {message}", err=True)
        return errors.EXIT_USAGE
    except click.Abort:
        echo("lclient: interrupted", err=True)
        return errors.EXIT_INTERRUPTED
    return result if isinstance(result, int) else errors.EXIT_OK

