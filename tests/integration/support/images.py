"""Images for the image store's tests, made on this machine: layer tars written member by
member (the hostile ones included), an OCI layout built with Debian's umoci from a busybox
tree, its `docker save` twin made with skopeo, and the CLI run as a subprocess.

    tar_of(*members)         a layer tar from member specs (file, directory, symlink, ...)
    umoci_image(dir)         an OCI layout of two layers (the second deletes and replaces)
    umoci_users_image(...)   an OCI layout whose tags name users: by name, unknown, a hostile /etc/passwd
    docker_archive(...)      skopeo copy oci:DIR:TAG docker-archive:FILE:NAME:TAG
    snapshot(root)           what is in a tree: path -> (type, mode, uid, gid, size or target, sha256)
    run_image_cli(args)      `python -m lclusterd image ARGS`: (exit status, stdout, stderr)
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

from support.host import ROOTFS

UMOCI_TAG = "v1"


def _info(name: str, kind: bytes, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = fields.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    info.mtime = fields.pop("mtime", 1_700_000_000)
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def file(name: str, data: bytes = b"data\n", **fields) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.REGTYPE, size=len(data), **fields), data


def directory(name: str, **fields) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.DIRTYPE, **fields), b""


def symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.SYMTYPE, linkname=target, mode=0o777), b""


def hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.LNKTYPE, linkname=target), b""


def device(name: str, kind: bytes = tarfile.CHRTYPE, major: int = 1, minor: int = 3) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, kind, devmajor=major, devminor=minor, mode=0o666), b""


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """A layer tar holding `members` in order, names exactly as given (tarfile keeps a
    leading '/' and '..' when members are added this way)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def umoci(*args: str) -> None:
    subprocess.run(["umoci", *args], check=True, capture_output=True, text=True)


def umoci_image(work: Path) -> Path:
    """An OCI layout at work/oci, tag v1, made by umoci: layer 1 a busybox tree with files
    of other owners and modes, a setuid file, links and hard links; layer 2 deletes a file
    and replaces a directory's content (umoci writes whiteouts for both). Its config sets
    Env, Cmd, WorkingDir and User."""
    layout, bundle = work / "oci", work / "bundle"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:{UMOCI_TAG}")
    umoci("unpack", "--image", f"{layout}:{UMOCI_TAG}", str(bundle))
    _busybox_tree(bundle / "rootfs")
    # --refresh-bundle: the next repack is then the difference from this one, a layer of its own.
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:{UMOCI_TAG}", str(bundle))
    root = bundle / "rootfs"
    (root / "gone.txt").unlink()
    shutil.rmtree(root / "d")
    (root / "d").mkdir()
    (root / "d" / "z").write_text("z\n")
    (root / "layer2.txt").write_text("second layer\n")
    umoci("repack", "--image", f"{layout}:{UMOCI_TAG}", str(bundle))
    umoci("config", "--image", f"{layout}:{UMOCI_TAG}", "--config.env", "GREETING=from the image",
          "--config.env", "PATH=/bin:/usr/bin", "--config.workingdir", "/home/user", "--config.user", "1000:1000",
          "--config.cmd", "/bin/sh", "--config.cmd", "-c", "--config.cmd", "echo image default command")
    umoci("gc", "--layout", str(layout))
    return layout


USERS_PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1234:1235:the app:/home/app:/bin/sh\n"
USERS_GROUP = "root:x:0:\nappgroup:x:1235:\nextra:x:2000:someone,app\nother:x:2001:someone\n"


def umoci_users_image(work: Path, outside: Path) -> Path:
    """An OCI layout at work/oci-users made by umoci, a busybox tree whose /etc/passwd names
    app (1234:1235, home /home/app) and whose /etc/group puts app in extra (2000), with tags:
    `app` (User app), `nosuch` (User nosuch), and `hostile` (User hostonly), whose second
    layer makes /etc/passwd a link climbing out of the image to `outside`, a file of the host."""
    layout, bundle = work / "oci-users", work / "bundle-users"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:app")
    umoci("unpack", "--image", f"{layout}:app", str(bundle))
    root = bundle / "rootfs"
    _busybox_tree(root)
    (root / "etc" / "passwd").write_text(USERS_PASSWD)
    (root / "etc" / "group").write_text(USERS_GROUP)
    (root / "home" / "app").mkdir()
    umoci("repack", "--refresh-bundle", "--image", f"{layout}:app", str(bundle))
    umoci("config", "--image", f"{layout}:app", "--config.user", "app")
    umoci("config", "--image", f"{layout}:app", "--tag", "nosuch", "--config.user", "nosuch")
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to("../" * 16 + str(outside).lstrip("/"))
    umoci("repack", "--image", f"{layout}:hostile", str(bundle))
    umoci("config", "--image", f"{layout}:hostile", "--config.user", "hostonly")
    umoci("gc", "--layout", str(layout))
    return layout


def _busybox_tree(root: Path) -> None:
    for sub in ("bin", "etc", "home/user", "usr/bin", "d", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(Path(ROOTFS) / "bin" / "busybox", root / "bin" / "busybox")
    applets = subprocess.run([str(root / "bin" / "busybox"), "--list"], check=True, capture_output=True, text=True)
    for applet in applets.stdout.split():
        if applet != "busybox":
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    owned = root / "home" / "user" / "file"
    owned.write_text("the user's\n")
    os.chown(owned, 1000, 1000)
    os.chmod(owned, 0o640)
    os.chown(root / "home" / "user", 1000, 1000)
    shutil.copy2(root / "bin" / "busybox", root / "usr" / "bin" / "suid")
    os.chmod(root / "usr" / "bin" / "suid", 0o4755)
    (root / "gone.txt").write_text("deleted by layer 2\n")
    (root / "d" / "x").write_text("x\n")
    (root / "d" / "y").write_text("y\n")
    (root / "a").write_text("linked\n")
    os.link(root / "a", root / "a-link")
    os.symlink("/etc/passwd", root / "absolute-link")


def docker_archive(layout: Path, out: Path, name: str = "lclusterd-test/busybox") -> Path:
    """The image of `layout` as a `docker save` archive, by skopeo."""
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:{UMOCI_TAG}", f"docker-archive:{out}:{name}:{UMOCI_TAG}"],
                   check=True, capture_output=True, text=True)
    return out


def snapshot(root: str | Path) -> dict[str, tuple]:
    """Every entry under root (not root itself): type and mode, owner, and for a file its
    size and sha256 and link count, for a link its target. Walked without following links."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what: tuple = (os.readlink(path),)
            elif stat.S_ISREG(st.st_mode):
                what = (st.st_size, st.st_nlink, hashlib.sha256(Path(path).read_bytes()).hexdigest())
            else:
                what = ()
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, *what)
    return found


def run_image_cli(*args: str) -> tuple[int, str, str]:
    """`lclusterd image ARGS` as a user runs it (through `python -m lclusterd`)."""
    done = subprocess.run([sys.executable, "-m", "lclusterd", "image", *args], capture_output=True, text=True,
                          timeout=300)
    return done.returncode, done.stdout, done.stderr
