"""An image in use (images/inuse.py): a job's shared lock on its rootfs keeps `image rm` and
`import --replace` off it, and a job never starts on an image being removed."""

from __future__ import annotations

import os

import pytest

from lclusterd.errors import ImageInUse, SetupFailed
from lclusterd.runtime.images import inuse


def test_a_held_rootfs_cannot_be_removed_until_every_holder_lets_go(tmp_path):
    first, second = inuse.hold(str(tmp_path)), inuse.hold(str(tmp_path))  # two jobs on one image
    os.close(first)
    with pytest.raises(ImageInUse, match="image 'bb' is in use by a job running on this node"):
        with inuse.unused("bb", str(tmp_path)):
            pass
    os.close(second)
    with inuse.unused("bb", str(tmp_path)):
        pass


def test_a_job_does_not_start_on_an_image_being_removed_nor_on_a_missing_rootfs(tmp_path):
    with inuse.unused("bb", str(tmp_path)):
        with pytest.raises(SetupFailed, match=f"rootfs: the image at {tmp_path} is being removed from this node"):
            inuse.hold(str(tmp_path))
    with pytest.raises(SetupFailed, match="rootfs: rootfs /nonexistent/x does not exist"):
        inuse.hold("/nonexistent/x")
    (tmp_path / "file").write_text("")
    with pytest.raises(SetupFailed, match="Not a directory"):
        inuse.hold(str(tmp_path / "file"))


def test_a_missing_tree_is_nobodys_and_a_failed_start_lets_its_hold_go(tmp_path):
    with inuse.unused("gone", str(tmp_path / "rootfs")):  # a crashed import left no rootfs
        pass
    with pytest.raises(RuntimeError):
        with inuse.holding(str(tmp_path)):
            raise RuntimeError("the start failed")
    with inuse.unused("bb", str(tmp_path)):  # its hold was closed
        pass
