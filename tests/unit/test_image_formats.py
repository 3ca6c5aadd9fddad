"""Layer member names, the two image formats and the digests, as data and small files (no
root: nothing here is extracted; tests/integration/test_images*.py do that)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from lclusterd.errors import InvalidImage
from lclusterd.runtime.images import paths
from lclusterd.runtime.images.importer import layers_digest
from lclusterd.runtime.images.manifest import DOCKER, OCI, read_manifest
from lclusterd.runtime.images.pack import write_layout
from lclusterd.runtime.images.sources import open_source
from lclusterd.runtime.images.streams import LayerStream


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def a_tar(name: str = "f", data: bytes = b"x") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# -- names --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, parts", [("a/b", ("a", "b")), ("./a//b/", ("a", "b")), ("./", ()), (".", ()),
                                         ("a/./b", ("a", "b")), ("..a/b..", ("..a", "b.."))])
def test_member_names_become_components(name, parts):
    assert paths.parts_of(name) == parts


@pytest.mark.parametrize("name, reason", [("/etc/passwd", "absolute path"), ("../x", "'..' component"),
                                          ("a/../../x", "'..' component"), ("a/..", "'..' component"),
                                          ("a\0b", "NUL byte")])
def test_names_that_could_leave_the_image_are_refused(name, reason):
    with pytest.raises(paths.Refused, match=reason):
        paths.parts_of(name)


def test_whiteouts_opaque_markers_and_aufs_bookkeeping_are_told_apart():
    assert paths.classify("d/.wh.x") == paths.Entry("whiteout", ("d",), "x")
    assert paths.classify("d/.wh..wh..opq") == paths.Entry("opaque", ("d",))
    assert paths.classify(".wh..wh.plnk") == paths.Entry("meta", (), ".wh..wh.plnk")
    assert paths.classify("./") == paths.Entry("root", ())
    assert paths.classify("d/.whx").kind == "plain"
    for name in (".wh.", "d/.wh..", "d/.wh..."):
        with pytest.raises(paths.Refused, match="whiteout"):
            paths.classify(name)


def test_hard_link_targets_must_name_an_entry_inside():
    assert paths.link_target("./usr/bin/x") == ("usr", "bin", "x")
    for target in ("/etc/shadow", "../x", "./"):
        with pytest.raises(paths.Refused, match="hard link to"):
            paths.link_target(target)


def test_the_mount_points_come_from_the_runtimes_mount_table():
    assert paths.mount_points() == ("proc", "dev", "sys", "tmp")


# -- digests ------------------------------------------------------------------------------

def test_a_layer_stream_gives_the_blobs_digest_and_the_uncompressed_ones():
    tar = a_tar()
    for blob, compression in ((tar, "none"), (gzip.compress(tar), "gzip")):
        stream = LayerStream(io.BytesIO(blob))
        assert stream.compression == compression
        assert stream.tar.read(512)  # part of the tar; finish() reads the rest
        assert stream.finish() == (sha(blob), len(blob), sha(tar))


def test_a_zstd_layer_is_refused_by_its_magic():
    with pytest.raises(InvalidImage, match="zstd-compressed layers are not supported"):
        LayerStream(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\0" * 100))


def test_the_layers_digest_is_the_oci_chain_id():
    one, two = sha(b"1"), sha(b"2")
    assert layers_digest((one,)) == one
    assert layers_digest((one, two)) == sha(f"{one} {two}".encode())
    assert layers_digest(()) == sha(b"")


# -- the formats -------------------------------------------------------------------------

def test_an_oci_layout_is_read_with_its_digests(tmp_path):
    layers = [a_tar("one"), a_tar("two")]
    write_layout(tmp_path / "oci", layers, {"Cmd": ["/bin/sh"]}, tag="v2", compress=True)
    manifest = read_manifest(open_source(str(tmp_path / "oci")))
    assert (manifest.format, manifest.ref, manifest.config.cmd) == (OCI, "v2", ("/bin/sh",))
    assert [layer.diff_id for layer in manifest.layers] == [sha(layer) for layer in layers]
    for ref, layer in zip(manifest.layers, layers):
        blob = (tmp_path / "oci" / ref.path).read_bytes()
        assert (ref.digest, ref.size, gzip.decompress(blob)) == (sha(blob), len(blob), layer)
    assert manifest.config_digest == sha(manifest.config_raw)


def docker_archive(directory: Path, layers: list[bytes], config_name: str | None = None, tags=("x/y:1",)) -> Path:
    """A `docker save` archive as a directory: manifest.json, <digest>.json, <id>/layer.tar."""
    directory.mkdir()
    config = json.dumps({"os": "linux", "config": {"Env": ["A=1"]},
                         "rootfs": {"type": "layers", "diff_ids": [sha(layer) for layer in layers]}}).encode()
    name = config_name or sha(config).split(":")[1] + ".json"
    (directory / name).write_bytes(config)
    paths_ = []
    for index, layer in enumerate(layers):
        (directory / f"l{index}").mkdir()
        (directory / f"l{index}" / "layer.tar").write_bytes(layer)
        paths_.append(f"l{index}/layer.tar")
    (directory / "manifest.json").write_text(json.dumps([{"Config": name, "RepoTags": list(tags), "Layers": paths_}]))
    return directory


def test_a_docker_archive_is_read_and_its_config_checked_by_its_name(tmp_path):
    manifest = read_manifest(open_source(str(docker_archive(tmp_path / "d", [a_tar()]))), ref="y:1")
    assert (manifest.format, manifest.ref, manifest.config.env) == (DOCKER, "x/y:1", {"A": "1"})
    assert manifest.layers[0].digest is None and manifest.layers[0].diff_id == sha(a_tar())


def test_a_docker_archive_whose_config_is_not_named_by_its_digest_is_refused(tmp_path):
    with pytest.raises(InvalidImage, match="is not named by its sha256 digest"):
        read_manifest(open_source(str(docker_archive(tmp_path / "d", [a_tar()], config_name="config.json"))))
    wrong = "0" * 64 + ".json"
    with pytest.raises(InvalidImage, match="does not match its digest"):
        read_manifest(open_source(str(docker_archive(tmp_path / "e", [a_tar()], config_name=wrong))))


def test_manifest_paths_that_leave_the_source_are_refused(tmp_path):
    archive = docker_archive(tmp_path / "d", [a_tar()])
    entries = json.loads((archive / "manifest.json").read_text())
    entries[0]["Layers"] = ["../../etc/passwd"]
    (archive / "manifest.json").write_text(json.dumps(entries))
    with pytest.raises(InvalidImage, match="layer '../../etc/passwd' is outside the image"):
        read_manifest(open_source(str(archive)))


def test_a_tar_of_a_layout_is_read_whether_or_not_it_has_a_top_directory(tmp_path):
    write_layout(tmp_path / "layout", [a_tar()])
    for name, arcname in (("flat.tar", "."), ("nested.tar", "layout")):
        with tarfile.open(tmp_path / name, "w") as tar:
            tar.add(tmp_path / "layout", arcname=arcname)
        assert read_manifest(open_source(str(tmp_path / name))).format == OCI
