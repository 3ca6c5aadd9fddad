"""Volumes, the pure parts and the refusals that need no mount: the spec's field, where the
job plan makes directories and moves the volumes, the node's roots, and each reason a
volume is refused before anything is cloned (runtime/volumes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lclusterd import limits
from lclusterd.errors import InvalidSpec, SetupFailed
from lclusterd.runtime import plan, protocol, volumes
from lclusterd.runtime.mounts import Scratch
from lclusterd.runtime.spec import RuntimeSpec
from lclusterd.runtime.userns import IdMap
from lclusterd.runtime.volumes import VolumeRoots

from test_plan import job, names

SCRATCH = Scratch("/scratch")


def spec(**kw) -> RuntimeSpec:
    return RuntimeSpec(job_id="0" * 32, argv=["/bin/true"], rootfs="/r", **kw)


# -- the spec --------------------------------------------------------------------------

def test_a_spec_carries_volumes_through_the_protocol():
    sent = spec(volumes=["/srv/a:/data:ro", "/srv/b:/b"], cwd="/data")
    received = protocol.decode_request(protocol.encode(protocol.Start(sent)))
    assert received.spec.volumes == ["/srv/a:/data:ro", "/srv/b:/b"] and received.spec.cwd == "/data"
    received.spec.validate()


@pytest.mark.parametrize("volumes, message", [
    (["/a"], "volume takes HOST:PATH"),
    (["/a:/b", "/c:/b"], "two volumes are mounted at /b"),
    (["/a:/proc"], "no volume can go at or under /proc, /sys, /dev"),
    (["/a:/sys/fs"], "no volume can go at or under"),
    (["/a:/dev/shm"], "no volume can go at or under"),
])
def test_volumes_the_runtime_cannot_mount_are_refused_by_validate(volumes, message):
    with pytest.raises(InvalidSpec, match=message):
        spec(volumes=volumes).validate()
    spec(volumes=["/a:/procs", "/a:/device", "/a:/tmp"]).validate()  # near misses are fine


@pytest.mark.parametrize("value, message", [("/a:/b", "wrong type"), ([1], "must hold strings only"),
                                            ([None], "must hold strings only")])
def test_a_volumes_field_of_the_wrong_type_is_refused(value, message):
    data = spec().to_json() | {"volumes": value}
    with pytest.raises(InvalidSpec, match=message):
        RuntimeSpec.from_json(data)


# -- the plan --------------------------------------------------------------------------

@pytest.mark.parametrize("ids", [None, IdMap(1_000_065_536, 1_000_065_536)], ids=["no-userns", "userns"])
def test_directories_are_made_then_volumes_moved_outer_first_after_the_mounts_before_pivot(ids):
    tokens = plan.job_plan(job(ids=ids, cwd="/work", volumes=("/data/inner", "/data", "/x")), SCRATCH)
    order = names(tokens)
    last_mount, pivot = max(i for i, name in enumerate(order) if name == "mount"), order.index("pivot")
    made = [i for i, name in enumerate(order) if name == "mkdirs"]
    moved = [i for i, name in enumerate(order) if name == "volume"]
    assert last_mount < min(made) and max(made) < min(moved) and max(moved) < pivot
    owner = [str(ids.uid), str(ids.gid)] if ids else ["-1", "-1"]
    assert [args for name, args in plan.ops(tokens) if name == "mkdirs"] == [
        ["/scratch/root", path, *owner] for path in ("/work", "/data/inner", "/data", "/x")]
    # each volume's mount travels at its index in the spec; the outer one is moved first
    assert [args for name, args in plan.ops(tokens) if name == "volume"] == [
        ["/scratch/root", "/data", "1"], ["/scratch/root", "/x", "2"], ["/scratch/root", "/data/inner", "0"]]
    steps = [args[0] for name, args in plan.ops(tokens) if name == "step"]
    assert "volume /data" in steps and "directory /work" in steps


def test_the_plan_without_volumes_or_working_directory_has_no_such_step():
    order = names(plan.job_plan(job(cwd="/"), SCRATCH))
    assert "mkdirs" not in order and "volume" not in order


# -- the node's roots ------------------------------------------------------------------

def test_volume_roots_must_be_existing_absolute_directories(tmp_path):
    assert VolumeRoots.checked([str(tmp_path)]).roots == (str(tmp_path),)
    assert VolumeRoots.checked([]).roots == ()
    for bad, message in (("rel", "absolute, normalised"), ("/", "other than /"), (f"{tmp_path}/../x", "normalised"),
                         (f"{tmp_path}/none", "is not an existing directory")):
        with pytest.raises(ValueError, match=message):
            VolumeRoots.checked([bad])


def test_a_host_path_belongs_to_the_longest_root_it_lies_in():
    roots = VolumeRoots(("/srv", "/srv/data"))
    assert roots.root_of("/srv/data/x") == "/srv/data" and roots.root_of("/srv/data") == "/srv/data"
    assert roots.root_of("/srv/database") == "/srv" and roots.root_of("/srvx") is None
    assert roots.root_of("/etc") is None


def refusal(roots: VolumeRoots, entry: str) -> str:
    with pytest.raises(SetupFailed) as caught:
        volumes.open_all(roots, [entry])
    return str(caught.value)


def test_each_refusal_says_why_before_anything_is_cloned(tmp_path: Path):
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "file").write_text("x")
    (root / "abs").symlink_to("/etc")
    (root / "up").symlink_to("../..")
    (root / "inside").symlink_to("dir")
    (root / "dir" / "back").symlink_to("../../..")
    roots = VolumeRoots((str(root),))
    assert refusal(VolumeRoots(), "/srv:/data") == f"volume /srv: {volumes.NO_VOLUMES}"
    assert refusal(roots, "/etc:/data") == f"volume /etc: not under any --volume-root of this node (allowed: {root})"
    assert refusal(roots, f"{root}/none:/d") == f"volume {root}/none: does not exist"
    assert refusal(roots, f"{root}/file:/d") == f"volume {root}/file: is not a directory"
    for escape in ("abs", "up", "dir/back", "inside/back", "abs/ssl"):
        assert refusal(roots, f"{root}/{escape}:/d") == (
            f"volume {root}/{escape}: leads out of --volume-root {root} (a symbolic link or '..' on its way points outside)")


def test_places_follow_the_entries_order():
    assert volumes.places(["/a:/x:ro", "/b/:/y/"]) == ("/x", "/y")
    assert limits.MAX_VOLUMES == 32  # jobinit.h's MAX_VOLUMES: the descriptors the init takes with a job
    header = (Path(plan.__file__).parent / "jobinit" / "jobinit.h").read_text()
    assert f"#define MAX_VOLUMES {limits.MAX_VOLUMES}" in header


def test_the_job_init_retries_openat2_as_often_as_the_fork_server():
    """Both retry a walk a rename raced (EAGAIN) the same number of times (test_users.py has
    the race itself)."""
    source = (Path(plan.__file__).parent / "jobinit" / "mounts.c").read_text()
    assert f"#define OPENAT2_TRIES {volumes.OPENAT2_TRIES} " in source
