"""`lclusterd`: parse options (command line > LCLUSTERD_* environment > config file > default)
into a Config and run the daemon. Nothing else happens here."""

from __future__ import annotations

import os
import sys

import click

from lclusterd import __version__
from lclusterd.cluster.placement import POLICIES
from lclusterd.config import (DEFAULT_CONFIG_FILE, LOG_FORMATS, LOG_LEVELS, SHUTDOWN_MODES, USERNS_MODES, Config,
                              ConfigError, commented_file, defaults, load_file, option_names)

_D = defaults()  # each option's default lives in Config, once


def _load_config_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    path = value or (DEFAULT_CONFIG_FILE if os.path.exists(DEFAULT_CONFIG_FILE) else None)
    if path:
        try:
            ctx.default_map = {k: v for k, v in load_file(path).items()}
        except ConfigError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=_param) from None
    return path


@click.command(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "LCLUSTERD",
                                 "show_default": True})
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False, callback=_load_config_file,
              help=f"TOML file with any of these options (keys as the long names). Default: {DEFAULT_CONFIG_FILE} if it exists.")
@click.option("--namespace", default=_D["namespace"],
              help="Host name or address this node binds and advertises to other nodes and clients.")
@click.option("--listen", default=_D["listen"],
              help="gRPC TCP port, or HOST:PORT to bind another address than --namespace (served with --tls-dir or "
                   "--insecure).")
@click.option("--etcd", default="",
              help="Comma-separated endpoints of an existing etcd (http://HOST:PORT,... or https:// with the "
                   "--etcd-* TLS options). Empty: start an embedded etcd with its data under --state-dir, on loopback, "
                   "TLS with client certificates only root can read (--state-dir/etcd-tls), restarted if it dies, "
                   "stopped with the daemon.")
@click.option("--etcd-cacert", default=_D["etcd_cacert"],
              help="PEM file of the CA that signed the external etcd's certificates (needed for https:// endpoints).")
@click.option("--etcd-cert", default=_D["etcd_cert"],
              help="PEM client certificate this node presents to the external etcd (with --etcd-key), when etcd "
                   "runs with --client-cert-auth.")
@click.option("--etcd-key", default=_D["etcd_key"], help="PEM private key of --etcd-cert.")
@click.option("--rootfs", default=_D["rootfs"], help="Root filesystem jobs run in (read-only lower layer of each job's overlay).")
@click.option("--state-dir", default=_D["state_dir"],
              help="Where this node keeps job logs, runtime state, the Unix socket (lclusterd.sock) and the embedded etcd.")
@click.option("--node-name", default=None, help="This node's name in the cluster.  [default: the host name]")
@click.option("--cgroup-root", default=_D["cgroup_root"],
              help="The cgroup under which each node's jobs get their parent cgroup ROOT/NODE-NAME (in every v1 "
                   "hierarchy, or the v2 tree); separate test runs or clusters on one host may use their own.")
@click.option("--capacity", default=_D["capacity"], type=click.IntRange(min=1), help="Most jobs this node runs at once.")
@click.option("--max-jobs-per-user", default=_D["max_jobs_per_user"], type=click.IntRange(min=0),
              help="Most jobs one user may have in etcd at once, queued, running or ended and not yet removed "
                   "(--keep), counted by the node taking an add; admins are not held to it. 0: no limit.")
@click.option("--max-running-per-user", default=_D["max_running_per_user"], type=click.IntRange(min=0),
              help="While this node is the prime: most jobs of one owner assigned or running at once in the "
                   "cluster; their next ones wait and other users' are placed past them. 0: no limit.")
@click.option("--max-log-space", default=_D["max_log_space"], metavar="SIZE|N%",
              help="Most disk space the job logs of this node take together (a size, or a share of the disk they "
                   "are on); past it the output of the jobs that ended first is replaced by a line saying so. 0: no limit.")
@click.option("--prefix", default=_D["prefix"], help="etcd key prefix; clusters sharing one etcd need different prefixes.")
@click.option("--keep", default=_D["keep"],
              help="How long an ended job's record and log files are kept (e.g. 12h, 30d). Then the prime removes "
                   "the record, leaving for as long again a tombstone so that lclient can say so, and the job's node "
                   "removes its logs. The prime also compacts etcd's history every keep/4 (0.5 s to 5 min).")
@click.option("--tls-dir", default=_D["tls_dir"],
              help="A directory with the cluster CA (ca.pem) and this node's certificate and key (NAME.pem, "
                   "NAME-key.pem for its --node-name; see lclusterd certs): TCP is then served with mutual TLS, "
                   "clients present user certificates and nodes node certificates to each other.")
@click.option("--insecure", is_flag=True, default=False,
              help="Serve plain TCP without --tls-dir, every caller an admin (labs and tests only), on a loopback "
                   "address only. Without --tls-dir or --insecure the node serves only its Unix socket.")
@click.option("--web-listen", default=_D["web_listen"],
              help="HOST:PORT of this node's web page and its JSON API under /api/ (plain HTTP; log in with the link "
                   "`lclient -web` prints). Empty: no web page.")
@click.option("--on-shutdown", type=click.Choice(SHUTDOWN_MODES), default=_D["on_shutdown"],
              help="On SIGTERM/SIGINT: kill running jobs (recorded as KILLED), or let them finish first. "
                   "A second signal kills them anyway.")
@click.option("--default-pids", default=_D["default_pids"], type=click.IntRange(min=1),
              help="pids limit for jobs that set none (contains fork bombs).")
@click.option("--max-pids", default=_D["max_pids"], type=click.IntRange(min=0),
              help="Processes all of this node's jobs may have together (their parent cgroup's pids.max); a job "
                   "asking for more is refused.  [default: half the kernel's pid_max]")
@click.option("--default-mem", default=_D["default_mem"], help="Memory limit of a job that sets no -mem; a job may ask for more, up "
                                                "to what a node offers.  [default: 1G, or --memory if less]")
@click.option("--max-log-size", default=_D["max_log_size"],
              help="Most bytes kept of each job's stdout and of its stderr; the rest is dropped after a marker line "
                   "and -check says so.")
@click.option("--userns", type=click.Choice(USERNS_MODES), default=_D["userns"],
              help="Run every job in a user namespace of its own, its root an unprivileged host uid from the "
                   "subordinate range of the user lclusterd (/etc/subuid, set up by make prep). off: a job's root "
                   "is the host's root (held in by capabilities, seccomp and namespaces), for kernels without "
                   "idmapped mounts under overlay (Linux < 5.19).")
@click.option("--bridge", default=_D["bridge"],
              help="The bridge jobs with -net bridge are attached to (made and removed by the runtime). Empty: "
                   "this node offers no job network, and such jobs go to other nodes.")
@click.option("--subnet", default=_D["subnet"],
              help="The IPv4 subnet its jobs' addresses come from (the bridge takes the first).  [default: a /24 "
                   "of --cluster-subnet, claimed in etcd: nodes sharing one etcd get disjoint subnets]")
@click.option("--cluster-subnet", default=_D["cluster_subnet"],
              help="The range nodes without --subnet claim their /24 from (the same on every node of a cluster).")
@click.option("--volume-root", multiple=True, default=(),
              help="A host directory jobs may mount volumes from (-volume HOST:PATH with HOST in it); repeatable. "
                   "None: this node takes no job with volumes.")
@click.option("--kill-grace", default=_D["kill_grace"], type=click.FloatRange(min=0, max=3600),
              help="Seconds between the SIGTERM a killed or timed-out job gets and the SIGKILL that follows.")
@click.option("--etcd-timeout", default=_D["etcd_timeout"], type=click.FloatRange(min=0.1, max=60),
              help="Seconds one etcd request may take before the node calls etcd unavailable.")
@click.option("--etcd-wait", default=_D["etcd_wait"], type=click.FloatRange(min=0), help="Seconds start-up waits for etcd to answer.")
@click.option("--lease-ttl", default=_D["lease_ttl"], type=click.IntRange(min=1), help="Seconds etcd keeps this node (and its prime key) without a keep-alive.")
@click.option("--scheduling", type=click.Choice(POLICIES), default=_D["scheduling"],
              help="How the prime places jobs: itself first while it has room, then the node with most free slots "
                   "(prime-first); or by requested memory (-mem) against each node's free memory: the first node "
                   "by name that fits (first-fit) or the one it fits most tightly (best-fit).")
@click.option("--memory", default=_D["memory"], help="Memory this node offers to jobs (e.g. 4G), fitted against their -mem, and "
                                           "the limit of all of them together (their parent cgroup).  [default: the "
                                           "host's MemTotal less 10 %, at least 512M less]")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default=_D["log_level"], help="Least severe log lines shown.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=_D["log_format"],
              help="Log lines on stderr: text (\"lclusterd: LEVEL message\"; under systemd with the journal's "
                   "priority prefix instead) or json (one object per line: time, level, logger, message and "
                   "structured fields).")
@click.option("--metrics-listen", default=_D["metrics_listen"],
              help="HOST:PORT serving Prometheus metrics over plain HTTP (counts and times, no job ids, commands or "
                   "output); empty turns them off. Keep it on loopback unless whoever can reach it may read them.")
@click.version_option(__version__, "--version")
def cli(**options) -> None:
    """Run an lclusterd node: takes jobs over gRPC (its Unix socket, for root and the group
    lclusterd; TCP with mutual TLS with --tls-dir), queues them in etcd, and runs those
    assigned to it in isolated containers.

    Every option can also be set as an environment variable LCLUSTERD_<OPTION> (e.g.
    LCLUSTERD_STATE_DIR) or in the config file (`lclusterd config-template` prints one with
    every option at its default). Exit status: 0 after a clean shutdown, 2 on a usage error, 3
    when the daemon cannot start or stops for want of its fork server or its embedded etcd
    (the reason is logged)."""
    if not options.get("node_name"):
        options.pop("node_name")
    config = Config(**options)
    from lclusterd.daemon import run  # imported late: --help stays fast

    sys.exit(run(config))


def drain_main(argv: list[str]) -> int:
    """`lclusterd drain NODE` / `lclusterd undrain NODE [--server HOST:PORT]`: ask a running
    node (any node of the cluster) to stop or resume new assignments to NODE. The same as
    `lclient -drain NODE` (which this calls), kept here for operators used to the daemon's name."""
    from lclient.cli import run as lclient_run  # the client: one line per error, same exit codes

    verb, rest = argv[0], argv[1:]
    if rest[:1] in (["-h"], ["--help"]) or not rest:
        click.echo(f"Usage: lclusterd {verb} NODE [--server HOST:PORT|unix:PATH]\n\n"
                   f"{'Stop assigning new jobs to' if verb == 'drain' else 'Let new jobs be assigned to'} NODE; "
                   "its running jobs go on. --server defaults to $LCLUSTER_SERVER or 127.0.0.1:64051.",
                   err=not rest)
        return 0 if rest else 2
    return lclient_run([f"-{verb}", *rest])


def image_main(argv: list[str]) -> int:
    """`lclusterd image import|ls|rm ...`: this node's image store (lclusterd/runtime/images/cli.py),
    under the --state-dir and beside the --rootfs the daemon takes from the config file (or
    LCLUSTERD_STATE_DIR, LCLUSTERD_ROOTFS, or each command's own options)."""
    from lclusterd.runtime.images.cli import run as images_run

    where = {"state_dir": _D["state_dir"], "rootfs": _D["rootfs"]}
    if os.path.exists(DEFAULT_CONFIG_FILE):
        try:
            where.update({key: value for key, value in load_file(DEFAULT_CONFIG_FILE).items() if key in where})
        except ConfigError as exc:
            click.echo(f"lclusterd image: {exc}", err=True)
            return 2
    return images_run(argv, **where)


def config_template() -> str:
    """Every option of the daemon commented out at its default, under its help (a TOML file)."""
    known = set(option_names())
    return commented_file([(p.name, p.default, p.help or "") for p in cli.params if p.name in known])


def main() -> None:
    if sys.argv[1:2] == ["config-template"]:
        click.echo(config_template(), nl=False)
        sys.exit(0)
    if sys.argv[1:2] in (["drain"], ["undrain"]):
        sys.exit(drain_main(sys.argv[1:]))
    if sys.argv[1:2] == ["certs"]:
        from lclusterd.certs_cli import main as certs_main  # only this command needs cryptography

        sys.exit(certs_main(sys.argv[2:]))
    if sys.argv[1:2] == ["image"]:
        sys.exit(image_main(sys.argv[2:]))
    if os.geteuid() != 0 and not {"-h", "--help", "--version"} & set(sys.argv[1:]):
        click.echo("lclusterd: must run as root (it creates namespaces, cgroups and mounts)", err=True)
        sys.exit(3)
    try:
        cli.main(prog_name="lclusterd", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # one line, not click's three
        click.echo(f"lclusterd: {exc.format_message()}".replace("\n", " "), err=True)
        sys.exit(2)
    except click.Abort:
        sys.exit(130)


if __name__ == "__main__":
    main()
