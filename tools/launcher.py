"""Write the `lclient` command that `make prep` puts on PATH: a launcher started with `-I -S`.

    python tools/launcher.py OUT

The venv's console script starts the interpreter with `site`, which reads every .pth file of
the venv, and the editable install's .pth loads its import finder (pathlib, fnmatch, re,
importlib.util) at every start: about 20 ms of a command that should take tens. The
launcher skips `site` (-S) and the environment's PYTHON* variables and user site (-I), and
puts exactly this tree and the venv's site-packages on sys.path instead: the same modules as
the console script imports, found without a finder. Run with the venv's python, whose
interpreter and site-packages the launcher names."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the tree the launcher imports lclient from

TEMPLATE = """#!{python} -IS
# lclient without site (no .pth files, no editable-install finder) and without PYTHON*
# variables: written by tools/launcher.py (make prep); README "lclient's start-up" says why.
import sys
sys.path += {paths!r}
from lclient.main import main
main()
"""


def launcher_text(python: str, root: Path, site_packages: str) -> str:
    return TEMPLATE.format(python=python, paths=[str(root), site_packages])


def write_launcher(out: Path, python: str = sys.executable) -> None:
    """Write the launcher to `out` (mode 0755) in one rename, so a running lclient never reads half of it."""
    text = launcher_text(python, ROOT, sysconfig.get_path("purelib"))
    partial = out.with_name(out.name + ".new")
    partial.write_text(text)
    os.chmod(partial, 0o755)
    os.replace(partial, out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/launcher.py OUT")
    write_launcher(Path(sys.argv[1]))
