"""The volume syntax both planes share (limits.parse_volume / check_volumes / check_workdir)."""

import pytest

from lclusterd import limits
from lclusterd.errors import InvalidSpec


def test_a_volume_reads_as_host_path_and_mode():
    assert limits.parse_volume("/srv/data:/data:ro") == limits.Volume("/srv/data", "/data", True)
    assert limits.parse_volume("/srv/data/:/data/") == limits.Volume("/srv/data", "/data", False)
    assert limits.parse_volume("/a:/b:rw").read_only is False
    assert str(limits.Volume("/a", "/b", True)) == "/a:/b:ro"


@pytest.mark.parametrize("entry", ["/a", "a:/b", "/a:b", "/a:/", "/a:///", "/a/../b:/c", "/a:/b/./c", "/a//b:/c",
                                   "/a:/b:rx", "/a:/b:ro:x", "", "/a:/b\0", "/a:/" + "x" * 2000])
def test_malformed_volumes_are_refused(entry):
    with pytest.raises(InvalidSpec):
        limits.parse_volume(entry)


def test_two_volumes_at_one_place_or_too_many_are_refused():
    with pytest.raises(InvalidSpec, match="two volumes"):
        limits.check_volumes(["/a:/data", "/b:/data:ro"])
    with pytest.raises(InvalidSpec, match="at most"):
        limits.check_volumes([f"/a:/d{i}" for i in range(limits.MAX_VOLUMES + 1)])
    assert len(limits.check_volumes(["/a:/x", "/a:/y:ro"])) == 2


def test_workdir_is_empty_or_absolute():
    limits.check_workdir("")
    limits.check_workdir("/work")
    for bad in ("work", "/a/../b"):
        with pytest.raises(InvalidSpec):
            limits.check_workdir(bad)
