"""`lclusterd certs init|node|user|server|client`: make the cluster CA and the certificates of
nodes and users, and of etcd's members and clients (certs.py). Each writes its files and says
which, one line each; an error is one line on stderr and exit status 1 (2 for a usage error)."""

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
