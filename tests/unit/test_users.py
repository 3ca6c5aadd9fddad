"""A job's User (runtime/users.py): its forms checked as data (limits.parse_user), resolved
against a rootfs's own /etc/passwd and /etc/group written here, as runc resolves it, and never
against a file outside that rootfs, whatever links the rootfs holds."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lclusterd import limits
from lclusterd.errors import InvalidSpec, SetupFailed
from lclusterd.runtime import users
from lclusterd.runtime.users import Credentials

PASSWD = """root:x:0:0:root:/root:/bin/sh
app:x:1234:1235:the app:/home/app:/bin/sh
broken:x:notanumber:1:::
second:x:1234:9::/second:/bin/sh
nohome:x:1500:1500
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
big:x:70000:70000::/big:/bin/sh
"""
GROUP = """root:x:0:
appgroup:x:1235:
extra:x:2000:app,someone
more:x:2001:someone,app
spaced:x:2003:someone, app
other:x:2002:someone
bad:x:nan:app
again:x:2000:app
nogroup:x:65534:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


def resolve(root: Path, user: str, userns: bool = True) -> Credentials:
    return users.resolve(str(root), user, userns)


@pytest.mark.parametrize("text, parsed", [
    ("", ("", "")), ("1000", ("1000", "")), ("1000:1000", ("1000", "1000")), ("app", ("app", "")),
    ("app:staff", ("app", "staff")), ("1000:staff", ("1000", "staff")), ("app:50", ("app", "50")),
    ("4294967294", ("4294967294", "")),
])
def test_the_oci_forms_of_user(text, parsed):
    assert limits.parse_user(text) == parsed


@pytest.mark.parametrize("text, message", [
    ("a:b:c", "is not USER or USER:GROUP"), (":1000", "is not USER or USER:GROUP"), ("app:", "is not USER"),
    ("a\nb", "is not USER"), ("x" * 300, "at most 256 bytes"), ("4294967295", "ids go from 0 to 4294967294"),
    ("0:4294967295", "not 4294967295"),
])
def test_a_malformed_user_is_refused(text, message):
    with pytest.raises(InvalidSpec, match=message):
        limits.parse_user(text)


@pytest.mark.parametrize("user, creds", [
    # a name: its entry's ids and home; supplementary groups are those listing the name, once each
    ("app", Credentials(1234, 1235, (2000, 2001), "/home/app")),
    # a uid with an entry is that entry (the first of that uid), groups included
    ("1234", Credentials(1234, 1235, (2000, 2001), "/home/app")),
    # a uid without one: gid 0 and home / (runc's and Docker's defaults), no groups
    ("1000", Credentials(1000, 0, (), "/")),
    ("1000:1000", Credentials(1000, 1000, (), "/")),
    # a group given: that gid and no supplementary groups (runc's explicit form)
    ("app:extra", Credentials(1234, 2000, (), "/home/app")),
    ("app:42", Credentials(1234, 42, (), "/home/app")),
    ("1000:other", Credentials(1000, 2002, (), "/")),
    ("root", Credentials(0, 0, (), "/root")),
    ("nohome", Credentials(1500, 1500, (), "/")),
])
def test_a_user_resolves_as_runc_resolves_it(rootfs, user, creds):
    assert resolve(rootfs, user) == creds


@pytest.mark.parametrize("user, message", [
    ("nosuch", "user nosuch: no such user in the image's /etc/passwd"),
    ("broken", "user broken: no such user in the image's /etc/passwd"),  # a line without numbers is skipped
    ("nosuch:extra", "user nosuch:extra: no user 'nosuch' in the image's /etc/passwd"),
    ("app:nosuch", "user app:nosuch: no group 'nosuch' in the image's /etc/group"),
    ("big", "user big: uid 70000 is outside the job's user namespace (ids 0-65535)"),
    ("70000", "user 70000: uid 70000 is outside the job's user namespace (ids 0-65535)"),
    ("1000:65536", "user 1000:65536: gid 65536 is outside the job's user namespace (ids 0-65535)"),
])
def test_a_user_that_cannot_be_resolved_fails_with_one_line_naming_it(rootfs, user, message):
    with pytest.raises(SetupFailed) as failed:
        resolve(rootfs, user)
    assert str(failed.value) == message


def test_without_a_user_namespace_ids_go_up_to_the_largest_valid_one(rootfs):
    assert resolve(rootfs, "big", userns=False) == Credentials(70000, 70000, (), "/big")
    assert resolve(rootfs, "4294967294:4294967294", userns=False).uid == 4294967294
    with pytest.raises(SetupFailed, match="group 65536 is outside"):
        (rootfs / "etc" / "group").write_text("wide:x:65536:app\n")
        resolve(rootfs, "app")


def test_a_rootfs_without_the_files_has_numeric_users_only(tmp_path):
    (tmp_path / "etc").mkdir()
    assert resolve(tmp_path, "1000") == Credentials(1000, 0, (), "/")
    assert resolve(tmp_path, "1000:5") == Credentials(1000, 5, (), "/")
    with pytest.raises(SetupFailed, match="user app: no such user"):
        resolve(tmp_path, "app")
    with pytest.raises(SetupFailed, match="no group 'staff'"):
        resolve(tmp_path, "1000:staff")
    (tmp_path / "etc").rmdir()
    (tmp_path / "etc").write_text("a file where /etc should be\n")
    assert resolve(tmp_path, "7") == Credentials(7, 0, (), "/")


def test_the_group_file_is_read_only_when_a_name_needs_it(rootfs):
    """A fully numeric User, or a uid without an entry, reads no /etc/group: a FIFO there
    would fail a read (it is not a regular file), so these resolving proves it was not opened."""
    (rootfs / "etc" / "group").unlink()
    os.mkfifo(rootfs / "etc" / "group")
    assert resolve(rootfs, "1000:1000") == Credentials(1000, 1000, (), "/")
    assert resolve(rootfs, "1000") == Credentials(1000, 0, (), "/")
    assert resolve(rootfs, "app:7") == Credentials(1234, 7, (), "/home/app")
    with pytest.raises(SetupFailed, match="user app: the image's /etc/group is not a regular file"):
        resolve(rootfs, "app")  # needs it, and does not block on the FIFO


OUTSIDE_PASSWD = "evil:x:4242:4242::/:/bin/sh\napp:x:999:999::/outside:/bin/sh\n"


@pytest.mark.parametrize("link", [
    lambda outside: str(outside / "passwd"),  # the host's path
    lambda outside: "../../outside/passwd",  # from <tmp>/rootfs/etc up to <tmp>, as a plain open would go
    lambda outside: "../" * 40 + str(outside / "passwd").lstrip("/"),  # past / and down again
], ids=["absolute", "up-two", "up-forty"])
def test_a_link_to_a_file_outside_the_rootfs_is_resolved_inside_it(rootfs, tmp_path, link):
    """/etc/passwd as a link to a host path (absolute, or climbing with '..') reads the
    rootfs's own file of that path, never the host's: here there is none."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text(OUTSIDE_PASSWD)
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").symlink_to(link(outside))
    with pytest.raises(SetupFailed, match="user evil: no such user in the image's /etc/passwd"):
        resolve(rootfs, "evil")
    assert resolve(rootfs, "999") == Credentials(999, 0, (), "/")  # not the outside entry's gid and home
    # what the link names inside the rootfs is what it reads
    inside = rootfs / os.path.normpath(os.path.join("/etc", os.readlink(rootfs / "etc" / "passwd"))).lstrip("/")
    inside.parent.mkdir(parents=True, exist_ok=True)
    inside.write_text("evil:x:77:78::/in:/bin/sh\n")
    assert resolve(rootfs, "evil") == Credentials(77, 78, (), "/in")


def test_a_linked_etc_directory_stays_inside_the_rootfs_too(rootfs, tmp_path):
    outside = tmp_path / "outside-etc"
    outside.mkdir()
    (outside / "passwd").write_text(OUTSIDE_PASSWD)
    for name in ("passwd", "group"):
        (rootfs / "etc" / name).unlink()
    (rootfs / "etc").rmdir()
    (rootfs / "etc").symlink_to(outside)
    with pytest.raises(SetupFailed, match="no such user"):
        resolve(rootfs, "evil")


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "the image's /etc/passwd is not a regular file"),
    (lambda p: p.symlink_to("/"), "the image's /etc/passwd is not a regular file"),  # the rootfs itself
    (lambda p: p.symlink_to("passwd"), "the image's /etc/passwd: Too many levels of symbolic links"),
    (lambda p: p.write_bytes(b"x" * (users.MAX_FILE_BYTES + 1)), "the image's /etc/passwd is larger than 1 MiB"),
])
def test_a_passwd_that_is_not_a_small_regular_file_fails_the_start(rootfs, make, message):
    (rootfs / "etc" / "passwd").unlink()
    make(rootfs / "etc" / "passwd")
    with pytest.raises(SetupFailed) as failed:
        resolve(rootfs, "app")
    assert str(failed.value) == f"user app: {message}"


def test_a_passwd_of_exactly_the_cap_is_read(rootfs):
    entry = b"app:x:5:6::/h:/bin/sh\n"
    (rootfs / "etc" / "passwd").write_bytes(entry + b"#" * (users.MAX_FILE_BYTES - len(entry) - 1) + b"\n")
    assert resolve(rootfs, "app").uid == 5


def test_a_climbing_link_resolves_while_renames_elsewhere_race_its_walk(rootfs, tmp_path):
    """A rename anywhere on the host during a '..' of a RESOLVE_IN_ROOT walk makes openat2
    answer EAGAIN (a few percent of walks here); the wrapper retries, as the kernel asks, so a
    busy host does not fail jobs with "Resource temporarily unavailable"."""
    (rootfs / "etc" / "passwd").rename(rootfs / "etc" / "real")
    (rootfs / "etc" / "passwd").symlink_to("../" * 40 + "etc/real")
    stop = threading.Event()

    def churn() -> None:
        a, b = tmp_path / "a", tmp_path / "b"
        a.touch()
        while not stop.is_set():
            a.rename(b)
            b.rename(a)

    renamer = threading.Thread(target=churn)
    renamer.start()
    try:
        found = [resolve(rootfs, "app").uid for _ in range(3000)]
    finally:
        stop.set()
        renamer.join()
    assert found == [1234] * 3000
