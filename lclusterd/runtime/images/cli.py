"""`lclusterd image import NAME PATH | ls | rm NAME`: the node's image store (store.py).

`lclusterd` hands its arguments after `image` to run(), with the state directory and the
rootfs the daemon would use as the defaults of --state-dir and --rootfs. Every error is
one line on stderr. Exit status: 0 done; 1 the import or removal failed (PATH missing,
not an image, malformed or corrupt, a layer refused, unknown name, name taken, not root);
2 usage error or invalid name.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import click

from lclusterd.errors import ImageError, InvalidImageName
from lclusterd.runtime.images.store import ImageInfo, ImageStore
from lclusterd.units import format_size

EXIT_FAILED, EXIT_USAGE = 1, 2


def _store_options(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--rootfs", envvar="LCLUSTERD_ROOTFS", show_default=True,
                           help="The node's rootfs, listed as the image busybox.")(command)
    return click.option("--state-dir", envvar="LCLUSTERD_STATE_DIR", show_default=True,
                        help="The node's state directory; images live in its images/.")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def images() -> None:
    """This node's images: read-only root filesystems jobs can run in."""


@images.command("import")
@click.argument("name")
@click.argument("path", type=click.Path())
@click.option("--replace", is_flag=True, help="Replace an image of the same name.")
@click.option("--ref", help="Which image, when PATH holds several (OCI ref name or docker tag).")
@_store_options
def import_(name: str, path: str, replace: bool, ref: str | None, state_dir: str, rootfs: str) -> None:
    """Import the OCI image layout (a directory or a tar of one) or `docker save` archive at
    PATH as NAME. Layers are checked against their digests and applied safely: device nodes
    and FIFOs are dropped (and listed), a path that would leave the image stops the import."""
    store = ImageStore(state_dir, rootfs)
    info = store.import_image(name, path, ref=ref, replace=replace, say=click.echo)
    layers = len(info.diff_ids)
    click.echo(f"imported {info.name}: {info.format}{f' {info.ref}' if info.ref else ''}, {layers} layer"
               f"{'' if layers == 1 else 's'}, {format_size(info.size_bytes)}, layers {info.layers_digest}")


@images.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Every field of every image, as JSON.")
@_store_options
def ls(as_json: bool, state_dir: str, rootfs: str) -> None:
    """List the images: name, size, when imported, and the digest of its layers (the OCI
    chain id; the same for an image whichever format it came in)."""
    found = ImageStore(state_dir, rootfs).list()
    if as_json:
        click.echo(json.dumps([info.to_json() for info in found], indent=1))
        return
    rows = [("NAME", "SIZE", "CREATED", "LAYERS")] + [_row(info) for info in found]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])


def _row(info: ImageInfo) -> tuple[str, str, str, str]:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.imported_at))
    layers = info.layers_digest[:19] if info.layers_digest else "(the node's --rootfs)"
    return info.name, format_size(info.size_bytes), created, layers


@images.command("rm")
@click.argument("name")
@_store_options
def rm(name: str, state_dir: str, rootfs: str) -> None:
    """Remove the image NAME."""
    ImageStore(state_dir, rootfs).remove(name)
    click.echo(f"removed {name}")


def run(argv: list[str], state_dir: str, rootfs: str) -> int:
    """Run `lclusterd image ARGV...`; the exit status."""
    if not argv:
        click.echo("lclusterd image: missing command: import, ls or rm (lclusterd image --help)", err=True)
        return EXIT_USAGE
    if not {"-h", "--help"} & set(argv) and os.geteuid() != 0:
        click.echo("lclusterd image: must run as root (the store is root's)", err=True)
        return EXIT_FAILED
    defaults = {"state_dir": state_dir, "rootfs": rootfs}
    try:
        images.main(argv, prog_name="lclusterd image", standalone_mode=False,
                    default_map={command: defaults for command in images.commands})
    except click.exceptions.Exit as exc:  # --help
        return exc.exit_code
    except click.ClickException as exc:  # one line, not click's three
        click.echo(f"lclusterd image: {exc.format_message()}".replace("\n", " "), err=True)
        return EXIT_USAGE
    except click.Abort:
        return 130
    except ImageError as exc:
        click.echo(f"lclusterd image: {exc}", err=True)
        return EXIT_USAGE if isinstance(exc, InvalidImageName) else EXIT_FAILED
    except OSError as exc:  # the store itself: disk full, read-only, ...
        click.echo(f"lclusterd image: {exc.filename or 'the store'}: {exc.strerror}", err=True)
        return EXIT_FAILED
    return 0
