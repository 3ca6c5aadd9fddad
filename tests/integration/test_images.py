"""The image store for real: images built here with umoci (OCI layout) and skopeo (its
`docker save` twin), imported through `lclusterd image` as an operator runs it, the trees
checked file by file; every bad input refused with one line and the store left as it was."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from lclusterd.runtime.images.config import host_architecture
from lclusterd.runtime.images.pack import write_layout
from lclusterd.runtime.images.store import ImageStore

from support.host import ROOTFS
from support.images import docker_archive, file, run_image_cli, snapshot, tar_of, umoci_image


@pytest.fixture(scope="module")
def oci_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return umoci_image(tmp_path_factory.mktemp("umoci"))


@pytest.fixture(scope="module")
def archive(oci_layout: Path) -> Path:
    return docker_archive(oci_layout, oci_layout.parent / "busybox-docker.tar")


@pytest.fixture(scope="module")
def oci_tar(oci_layout: Path) -> Path:
    out = oci_layout.parent / "busybox-oci.tar"
    subprocess.run(["tar", "-C", str(oci_layout), "-cf", str(out), "."], check=True)
    return out


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def cli(state: Path, *args: str) -> tuple[int, str, str]:
    return run_image_cli(*args, "--state-dir", str(state), "--rootfs", ROOTFS)


def store_entries(state: Path) -> list[str]:
    """What the store holds besides its lock: images, and leftovers of failed imports."""
    images = state / "images"
    return sorted(p.name for p in images.iterdir() if p.name != ".lock") if images.exists() else []


# -- both formats -----------------------------------------------------------------------

def test_an_oci_layout_its_tar_and_its_docker_save_twin_import_to_the_same_tree(state, oci_layout, oci_tar, archive):
    outputs = {}
    for name, path in (("oci", oci_layout), ("ocitar", oci_tar), ("docker", archive)):
        status, out, err = cli(state, "import", name, str(path))
        assert (status, err) == (0, ""), err
        outputs[name] = out
    assert outputs["oci"].startswith("imported oci: oci-layout v1, 2 layers, ")
    # skopeo prefixes the default registry's host to a tag without one: any host is fine here
    assert re.match(r"imported docker: docker-archive (\S+/)?lclusterd-test/busybox:v1, 2 layers, ", outputs["docker"])
    store = ImageStore(state, ROOTFS)
    trees = {name: snapshot(store.rootfs(name)) for name in outputs}
    assert trees["oci"] == trees["ocitar"] == trees["docker"]
    digests = {store.get(name).layers_digest for name in outputs}
    assert len(digests) == 1 and digests.pop().startswith("sha256:")
    assert all(line.endswith(store.get("oci").layers_digest) for line in (o.strip() for o in outputs.values()))


def test_the_imported_tree_keeps_owners_modes_links_and_applies_the_second_layers_deletions(state, oci_layout):
    assert cli(state, "import", "bb", str(oci_layout))[0] == 0
    root = Path(ImageStore(state, ROOTFS).rootfs("bb"))
    owned = os.lstat(root / "home/user/file")
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1000, 1000, 0o640)
    assert stat.S_IMODE(os.lstat(root / "usr/bin/suid").st_mode) == 0o4755  # setuid kept (harmless: see layer.py)
    assert os.readlink(root / "absolute-link") == "/etc/passwd"  # kept as is, never followed
    assert os.lstat(root / "a").st_ino == os.lstat(root / "a-link").st_ino
    assert not (root / "gone.txt").exists()  # layer 2's whiteout
    assert sorted(os.listdir(root / "d")) == ["z"]  # layer 2 replaced the directory's content
    assert (root / "layer2.txt").read_text() == "second layer\n"
    assert {"proc", "dev", "sys", "tmp"} <= set(os.listdir(root))  # the runtime's mount points
    assert stat.S_IMODE(os.stat(state / "images").st_mode) == 0o700  # no host user reaches a setuid file
    record = json.loads((state / "images/bb/image.json").read_text())
    assert record["format"] == "oci-layout" and len(record["diff_ids"]) == 2 and record["dropped"] == []
    config = ImageStore(state, ROOTFS).config("bb")
    assert (config.env["GREETING"], config.working_dir, config.user) == ("from the image", "/home/user", "1000:1000")
    assert config.cmd == ("/bin/sh", "-c", "echo image default command")


def test_ls_lists_the_nodes_rootfs_as_busybox_and_each_image(state, oci_layout):
    assert cli(state, "import", "bb", str(oci_layout))[0] == 0
    status, out, err = cli(state, "ls")
    assert (status, err) == (0, "")
    header, builtin, image = out.splitlines()
    assert header.split() == ["NAME", "SIZE", "CREATED", "LAYERS"]
    assert builtin.startswith("busybox ") and builtin.endswith("(the node's --rootfs)")
    digest = ImageStore(state, ROOTFS).get("bb").layers_digest
    assert image.startswith("bb ") and image.endswith(digest[:19])
    listed = json.loads(cli(state, "ls", "--json")[1])
    assert [(i["name"], i["builtin"]) for i in listed] == [("busybox", True), ("bb", False)]
    assert listed[1]["layers_digest"] == digest and listed[1]["size_bytes"] > 900_000


def test_rm_removes_the_image_and_replace_swaps_it(state, oci_layout, archive):
    assert cli(state, "import", "bb", str(oci_layout))[0] == 0
    assert cli(state, "import", "bb", str(archive)) == (
        1, "", "lclusterd image: an image named 'bb' is already on this node (--replace replaces it)\n")
    before = snapshot(state / "images" / "bb")
    (state.parent / "broken.tar").write_bytes(b"not a tar")
    assert cli(state, "import", "--replace", "bb", str(state.parent / "broken.tar"))[0] == 1
    assert snapshot(state / "images" / "bb") == before and store_entries(state) == ["bb"]  # a failed replace keeps the old
    status, out, _ = cli(state, "import", "--replace", "bb", str(archive))
    assert status == 0 and "docker-archive" in out
    assert ImageStore(state, ROOTFS).get("bb").format == "docker-archive"
    assert store_entries(state) == ["bb"]
    assert cli(state, "rm", "bb") == (0, "removed bb\n", "")
    assert store_entries(state) == []
    assert cli(state, "rm", "bb") == (1, "", "lclusterd image: no image named 'bb' on this node (lclusterd image ls lists them)\n")


# -- bad input: one line, a non-zero status, nothing left --------------------------------

def broken_layouts(tmp: Path, good: Path) -> dict[str, Path]:
    """Copies of a good layout, each broken one way."""
    broken = {}
    for name in ("index", "tampered", "no-blob", "not-json"):
        broken[name] = tmp / name
        shutil.copytree(good, broken[name])
    (broken["index"] / "index.json").write_text('{"manifests": [{"digest": "sha256:1234"}]}')
    (broken["not-json"] / "oci-layout").write_text("{not json")
    blobs = (json.loads(p.read_bytes()) for p in (good / "blobs/sha256").iterdir() if p.read_bytes()[:1] == b"{")
    layers = next(b for b in blobs if isinstance(b.get("layers"), list))  # the manifest (a config says "layers" too)
    blob = broken["tampered"] / "blobs/sha256" / layers["layers"][0]["digest"].split(":")[1]
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    (broken["no-blob"] / "blobs/sha256" / layers["layers"][1]["digest"].split(":")[1]).unlink()
    return broken


def test_bad_input_is_one_line_and_a_non_zero_status_and_leaves_nothing(state, tmp_path, oci_layout):
    broken = broken_layouts(tmp_path, oci_layout)
    (tmp_path / "plain.txt").write_text("not an image\n")
    (tmp_path / "empty").mkdir()
    cases = {
        ("import", "x", str(tmp_path / "missing.tar")): (1, f"{tmp_path}/missing.tar: no such file or directory"),
        ("import", "x", str(tmp_path / "plain.txt")): (1, f"{tmp_path}/plain.txt is not an image: neither a directory nor a tar archive"),
        ("import", "x", str(tmp_path / "empty")): (1, f"{tmp_path}/empty is not an image: it has neither an oci-layout file"),
        ("import", "x", str(broken["index"])): (1, "malformed index.json descriptor: mediaType is missing or not a string"),
        ("import", "x", str(broken["not-json"])): (1, "malformed oci-layout: not JSON"),
        ("import", "x", str(broken["tampered"])): (1, "layer 1 of 2 (sha256:"),
        ("import", "x", str(broken["no-blob"])): (1, "malformed OCI image layout: layer blob sha256:"),
        ("import", "X", str(oci_layout)): (2, "invalid image name 'X'"),
        ("import", "../x", str(oci_layout)): (2, "invalid image name '../x'"),
        ("import", "busybox", str(oci_layout)): (1, f"busybox is this node's rootfs ({ROOTFS})"),
        ("import", "x"): (2, "Missing argument 'PATH'"),
        ("rm", "nothere"): (1, "no image named 'nothere' on this node"),
        ("rm", "busybox"): (1, "busybox is this node's rootfs"),
        ("frobnicate",): (2, "No such command 'frobnicate'"),
    }
    for args, (expected_status, expected) in cases.items():
        status, out, err = cli(state, *args)
        assert (status, out) == (expected_status, ""), (args, err)
        assert err.startswith("lclusterd image: ") and err.count("\n") == 1 and expected in err, (args, err)
        assert store_entries(state) == [], args
    assert "does not match its digest" in cli(state, "import", "x", str(broken["tampered"]))[2]


def test_a_layout_with_two_images_needs_ref(state, tmp_path):
    layout = tmp_path / "two"
    write_layout(layout, [tar_of(file("one"))], tag="one")
    first = json.loads((layout / "index.json").read_text())["manifests"]
    write_layout(layout, [tar_of(file("two"))], tag="two")
    index = json.loads((layout / "index.json").read_text())
    index["manifests"] += first
    (layout / "index.json").write_text(json.dumps(index))
    status, _, err = cli(state, "import", "x", str(layout))
    assert (status, err) == (1, f"lclusterd image: {layout} holds 2 images (one, two); choose one with --ref\n")
    assert cli(state, "import", "x", str(layout), "--ref", "one")[0] == 0
    assert sorted(os.listdir(ImageStore(state, ROOTFS).rootfs("x"))) == ["dev", "one", "proc", "sys", "tmp"]


def test_an_image_for_another_architecture_is_refused(state, tmp_path):
    other = "s390x" if host_architecture() != "s390x" else "amd64"
    write_layout(tmp_path / "other", [tar_of(file("f"))], config_extra={"architecture": other})
    status, _, err = cli(state, "import", "x", str(tmp_path / "other"))
    assert (status, err) == (1, f"lclusterd image: the image is for linux/{other}; this node runs linux/{host_architecture()}\n")
