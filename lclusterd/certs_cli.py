"""`lclusterd certs init|node|user|server|client|revoke`: make the cluster CA and the
certificates of nodes and users, and of etcd's members and clients, and revoke certificates
(certs.py). Each writes its files and says which, one line each; an error is one line on stderr and exit status 1 (2 for a usage error)."""

from __future__ import annotations

import click

from lclusterd import certs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Certificates for mutual TLS between lclient, the nodes and their peers (--tls-dir)."""


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--days", default=certs.CA_DAYS, show_default=True, type=int, help="How long the CA is valid.")
@click.option("--force", is_flag=True, help="Replace a CA already there.")
def init(directory: str, days: int, force: bool) -> None:
    """Make a new cluster CA in DIRECTORY (ca.pem, and ca-key.pem, which nodes do not need)."""
    _report(certs.init_ca(directory, days, force))


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--host", "hosts", multiple=True, metavar="ADDR",
              help="A name or address the node is reached at (repeatable): clients and peers check it.")
@click.option("--days", default=certs.DAYS, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Replace a certificate already there.")
def node(directory: str, name: str, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """A certificate for the node NAME (its --node-name), signed by the CA in DIRECTORY."""
    _report(certs.issue(directory, name, certs.NODE, hosts, days, force))


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--admin", is_flag=True, help="May act on every job and on the nodes (drain, undrain).")
@click.option("--days", default=certs.DAYS, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Replace a certificate already there.")
def user(directory: str, name: str, admin: bool, days: int, force: bool) -> None:
    """A certificate for the user NAME, signed by the CA in DIRECTORY."""
    _report(certs.issue(directory, name, certs.ADMIN if admin else certs.USER, (), days, force))


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--host", "hosts", multiple=True, metavar="ADDR",
              help="A name or address the member is reached at (repeatable), e.g. its IP: clients and peers check it.")
@click.option("--days", default=certs.DAYS, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Replace a certificate already there.")
def server(directory: str, name: str, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """A certificate for the etcd member NAME (its --cert-file and --peer-cert-file), signed by the CA in DIRECTORY."""
    _report(certs.issue(directory, name, certs.SERVER, hosts, days, force))


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("name")
@click.option("--days", default=certs.DAYS, show_default=True, type=int)
@click.option("--force", is_flag=True, help="Replace a certificate already there.")
def client(directory: str, name: str, days: int, force: bool) -> None:
    """A client certificate NAME for etcd (a node's --etcd-cert and --etcd-key), signed by the CA in DIRECTORY."""
    _report(certs.issue(directory, name, certs.CLIENT, (), days, force))


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--cert", "files", multiple=True, metavar="FILE",
              help="A certificate file to revoke (repeatable), e.g. an older one of a NAME issued again since.")
def revoke(directory: str, names: tuple[str, ...], files: tuple[str, ...]) -> None:
    """Revoke the certificates of the holders NAME (as issued in DIRECTORY) and the --cert files:
    adds them to DIRECTORY/revoked.pem, signed by the CA. Copy that file into every node's
    --tls-dir and send the nodes SIGHUP; from then on they refuse those certificates."""
    if not names and not files:
        raise click.UsageError("name at least one holder or --cert FILE to revoke")
    path, added = certs.revoke(directory, names, files)
    for holder in added:
        click.echo(f"revoked {holder.role} {holder.name} (serial {holder.serial:#x})")
    click.echo(f"wrote {path}{'' if added else ' (no new revocation: each was revoked already)'}; copy it into "
               "every node's --tls-dir and send the nodes SIGHUP")


def _report(paths) -> None:
    for path in paths:
        click.echo(f"wrote {path}")


def main(argv: list[str]) -> int:
    try:
        cli.main(args=argv, prog_name="lclusterd certs", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"lclusterd certs: {exc.format_message()}".replace("\n", " "), err=True)
        return 2
    except certs.CertError as exc:
        click.echo(f"lclusterd certs: {exc}", err=True)
        return 1
    return 0
