"""Layers applied for real (as root: owners are set): what whiteouts and opaque
directories do, and every class of hostile tar, refused or neutralised, with nothing
written outside the image and nothing left in the store by a refused import."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lclusterd.errors import InvalidImage
from lclusterd.runtime.images.pack import write_layout
from lclusterd.runtime.images.store import ImageStore

from support.host import ROOTFS
from support.images import device, directory, file, hardlink, snapshot, symlink, tar_of


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside every image, with a file and a directory in it for layers to aim at."""
    path = Path(tempfile.mkdtemp(prefix="lclusterd-outside-", dir="/var/tmp"))
    (path / "victim").write_text("the host's\n")
    (path / "victim-dir").mkdir()
    (path / "victim-dir" / "keep").write_text("keep\n")
    yield path
    shutil.rmtree(path)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "state", ROOTFS)


def import_layers(store: ImageStore, tmp_path: Path, layers: list[bytes], name: str = "img", **kw) -> tuple[Path, list[str]]:
    """Import `layers` as an image; (its rootfs, the lines the import said)."""
    layout = tmp_path / f"layout-{len(list(tmp_path.iterdir()))}"
    write_layout(layout, layers, **kw)
    said: list[str] = []
    store.import_image(name, str(layout), say=said.append)
    return Path(store.rootfs(name)), said


def image_names(store: ImageStore) -> list[str]:
    return sorted(p.name for p in store.dir.iterdir() if p.name != ".lock")


# -- what layers mean --------------------------------------------------------------------

def test_whiteouts_and_an_opaque_directory_hide_the_layers_below_only(store, tmp_path):
    lower = tar_of(directory("d"), file("d/x"), file("d/y"), directory("d/old"), file("d/old/deep"),
                   directory("keep"), file("keep/k"), file("gone"), directory("gone-dir"), file("gone-dir/f"))
    upper = tar_of(file("d/new"), file("d/.wh..wh..opq", b""), directory("d/sub"), file("d/sub/new2"),
                   file(".wh.gone", b""), file(".wh.gone-dir", b""), file(".wh.never-was", b""),
                   file("fresh"), file(".wh.fresh", b""), file(".wh..wh.plnk", b""))
    root, said = import_layers(store, tmp_path, [lower, upper])
    tree = snapshot(root)
    assert sorted(p for p in tree if p.startswith("d/")) == ["d/new", "d/sub", "d/sub/new2"]
    assert "keep/k" in tree and "fresh" in tree  # a whiteout hides nothing of its own layer
    assert not {"gone", "gone-dir", "gone-dir/f", ".wh.gone", ".wh..wh.plnk"} & set(tree)
    assert said == []


def test_an_entry_replaces_what_the_layer_below_had_whatever_its_type(store, tmp_path):
    lower = tar_of(directory("was-dir"), file("was-dir/f"), file("was-file"), symlink("was-link", "was-file"))
    upper = tar_of(file("was-dir", b"now a file\n"), directory("was-file"), file("was-link", b"now a file\n"))
    root, _ = import_layers(store, tmp_path, [lower, upper])
    assert (root / "was-dir").read_text() == "now a file\n"
    assert (root / "was-file").is_dir() and not (root / "was-link").is_symlink()


def test_gzip_layers_and_owners_modes_and_times_are_applied(store, tmp_path):
    layer = tar_of(directory("srv", mode=0o750, uid=7, gid=8, mtime=1_600_000_000),
                   file("srv/setgid", mode=0o2755, uid=7, gid=8, mtime=1_500_000_000), symlink("srv/l", "/nowhere"))
    root, _ = import_layers(store, tmp_path, [layer], compress=True)
    for path, mode, mtime in (("srv", 0o750, 1_600_000_000), ("srv/setgid", 0o2755, 1_500_000_000)):
        st = os.lstat(root / path)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (mode, 7, 8, mtime), path
    assert os.readlink(root / "srv/l") == "/nowhere"


def test_a_layer_that_does_not_match_the_configs_diff_id_is_refused(store, tmp_path):
    wrong = {"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}
    with pytest.raises(InvalidImage, match=r"layer 1 of 1 .*does not match the config's diff_id sha256:0{64}"):
        import_layers(store, tmp_path, [tar_of(file("f"))], config_extra=wrong)
    assert image_names(store) == []


# -- hostile layers: refused, nothing written outside, nothing left ----------------------

def hostile(outside: Path) -> dict[str, tuple[list[bytes], str]]:
    """name -> (layers, what the refusal says)."""
    link = symlink("evil", str(outside))
    return {
        "path traversal": ([tar_of(file("../escape"))], r"entry '\.\./escape' has a '\.\.' component"),
        "path traversal, deeper": ([tar_of(directory("a"), file("a/../../escape"))], r"has a '\.\.' component"),
        "absolute path": ([tar_of(file(f"{outside}/planted"))], r"is an absolute path"),
        "write through a link, one layer": ([tar_of(link, file("evil/planted"))], r"evil is a symbolic link"),
        "write through a link of the layer below": ([tar_of(link), tar_of(file("evil/planted"))],
                                                    r"layer 2 of 2 .*evil is a symbolic link"),
        "directory through a relative link": ([tar_of(symlink("up", "../../../../../../.." + str(outside))),
                                               tar_of(directory("up/sub"))], r"up is a symbolic link"),
        "link through a link, then a write": ([tar_of(link, symlink("evil2", "evil"), file("evil2/x"))],
                                              r"evil2 is a symbolic link"),
        "hard link out by absolute name": ([tar_of(hardlink("stolen", f"{outside}/victim"))], r"is an absolute path"),
        "hard link out by ..": ([tar_of(hardlink("stolen", "../../../../../../victim"))], r"'\.\.' component"),
        "hard link through a link": ([tar_of(link, hardlink("stolen", "evil/victim"))], r"evil is a symbolic link"),
        "hard link to nothing": ([tar_of(hardlink("stolen", "not-here"))], r"not-here, which is not in the image"),
        "whiteout of ..": ([tar_of(file(".wh...", b""))], r"whiteout '\.wh\.\.\.' names '\.\.'"),
        "whiteout of .": ([tar_of(file("d/.wh..", b""))], r"names '\.'"),
        "whiteout through a link": ([tar_of(link), tar_of(file("evil/.wh.victim", b""))], r"evil is a symbolic link"),
        "whiteout above the root": ([tar_of(file("../.wh.victim", b""))], r"'\.\.' component"),
        "opaque directory through a link": ([tar_of(link), tar_of(file("evil/victim-dir/.wh..wh..opq", b""))],
                                            r"evil is a symbolic link"),
        "opaque directory above the root": ([tar_of(file("../.wh..wh..opq", b""))], r"'\.\.' component"),
    }


@pytest.mark.parametrize("case", list(hostile(Path("/x"))))
def test_a_hostile_layer_is_refused_and_writes_nothing_outside(store, tmp_path, outside, case):
    layers, refusal = hostile(outside)[case]
    before = snapshot(outside)
    with pytest.raises(InvalidImage, match=refusal):
        import_layers(store, tmp_path, layers)
    assert snapshot(outside) == before
    assert image_names(store) == []  # the temporary tree went with the refusal
    assert sorted(os.listdir(store.dir.parent)) == ["images"]  # nothing beside the store either


def test_an_entry_over_a_link_replaces_the_link_and_leaves_its_target_alone(store, tmp_path, outside):
    lower = tar_of(directory("etc"), symlink("etc/passwd", f"{outside}/victim"), symlink("etc/dir", f"{outside}/victim-dir"))
    upper = tar_of(file("etc/passwd", b"the image's own\n"), directory("etc/dir"), file("etc/dir/keep", b"image\n"))
    before = snapshot(outside)
    root, _ = import_layers(store, tmp_path, [lower, upper])
    assert (root / "etc/passwd").read_text() == "the image's own\n" and not (root / "etc/passwd").is_symlink()
    assert (root / "etc/dir/keep").read_text() == "image\n"
    assert snapshot(outside) == before


def test_a_whiteout_of_a_link_removes_the_link_not_its_target(store, tmp_path, outside):
    root, _ = import_layers(store, tmp_path, [tar_of(symlink("link", f"{outside}/victim-dir")),
                                              tar_of(file(".wh.link", b""))])
    assert not os.path.lexists(root / "link")
    assert (outside / "victim-dir" / "keep").read_text() == "keep\n"


def test_a_hard_link_to_a_link_links_the_link_itself_never_what_it_points_to(store, tmp_path, outside):
    lower = tar_of(symlink("s", f"{outside}/victim"), file("below"))
    upper = tar_of(hardlink("h", "s"), hardlink("below-too", "below"))
    root, _ = import_layers(store, tmp_path, [lower, upper])
    assert os.readlink(root / "h") == f"{outside}/victim" and os.lstat(root / "h").st_ino == os.lstat(root / "s").st_ino
    assert os.lstat(root / "below-too").st_ino == os.lstat(root / "below").st_ino  # a file of the layer below
    assert os.lstat(outside / "victim").st_nlink == 1


def test_device_nodes_and_fifos_are_dropped_and_said(store, tmp_path):
    layer = tar_of(directory("dev"), device("dev/sda", tarfile.BLKTYPE, 8, 0), device("dev/null"),
                   device("pipe", tarfile.FIFOTYPE), hardlink("pipe-link", "pipe"), file("kept"))
    root, said = import_layers(store, tmp_path, [layer])
    assert said == ["dropped 4 device node(s) and FIFO(s) (a job gets its devices from the runtime, and every mount "
                    "it can write is nodev): dev/sda (block device 8:0), dev/null (character device 1:3), pipe (FIFO), "
                    "pipe-link (hard link to pipe, which was dropped)"]
    assert sorted(snapshot(root)) == ["dev", "kept", "proc", "sys", "tmp"]
    assert [d[0] for d in store.get("img").dropped] == ["dev/sda", "dev/null", "pipe", "pipe-link"]


def test_links_where_the_runtime_mounts_are_replaced_by_directories(store, tmp_path, outside):
    layer = tar_of(symlink("tmp", str(outside)), symlink("proc", "/"), file("dev", b"not a directory\n"))
    root, said = import_layers(store, tmp_path, [layer])
    assert said == ["/proc was a link to /; made an empty directory, since the runtime mounts on it",
                    "/dev was not a directory; made an empty directory, since the runtime mounts on it",
                    f"/tmp was a link to {outside}; made an empty directory, since the runtime mounts on it"]
    for name in ("proc", "dev", "sys", "tmp"):
        assert stat.S_ISDIR(os.lstat(root / name).st_mode) and os.listdir(root / name) == []
