"""Real local users for the identity tests: made with useradd (system users, no home), removed
at the end; `as_user` runs the real lclient as one of them (runuser), so the node's socket
gate sees that uid from the kernel."""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from pathlib import Path

from support.processes import LCLIENT

GROUP = "lclusterd"  # made by `make prep` (make users)


def make_user(name: str, in_group: bool) -> str:
    """A system user `name`, in the group lclusterd or not (made again if it exists)."""
    remove_user(name)
    groups = ["-G", GROUP] if in_group else []
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", *groups, name],
                   check=True, capture_output=True)
    return name


def remove_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return
    subprocess.run(["userdel", name], check=True, capture_output=True)


def group_members() -> list[str]:
    return grp.getgrnam(GROUP).gr_mem


def reachable_by_others(path: str | Path) -> bool:
    """Whether a user other than root can reach `path` (every directory above it traversable)."""
    path = Path(path).resolve()
    return all(os.stat(p).st_mode & 0o001 for p in [*path.parents][:-1] if p != Path("/"))


def as_user(user: str, *args: str, server: str, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`lclient ARGS -server SERVER` run as `user` (runuser: uid, gid and groups of the user)."""
    assert reachable_by_others(LCLIENT), f"{LCLIENT} must be reachable by other users to run lclient as {user}"
    clean = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(env or {})}
    return subprocess.run(["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in clean.items()),
                           LCLIENT, *args, "-server", server], capture_output=True, text=True, timeout=60, input=stdin)
