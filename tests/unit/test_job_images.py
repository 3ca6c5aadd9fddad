"""A job's image in the control plane as data: the spec's rule, records that carry it, a node's
published images, and the runtime spec a node makes from the image's config (the job's own
options win)."""

from __future__ import annotations

import json
import os

import pytest

from lclusterd.cluster.runspec import NodeDefaults, to_runtime_spec
from lclusterd.errors import ImageNotFound, InvalidSpec, RecordError
from lclusterd.model import JobRecord, JobSpec, NodeInfo
from lclusterd.runtime.images.config import ImageConfig

JOB = "0123456789abcdef0123456789abcdef"


class Store:
    """An image store with one image, `debian`, as ImageLookup sees it."""

    def __init__(self, config: ImageConfig):
        self.configs = {"debian": config}

    def rootfs(self, name: str) -> str:
        if name not in self.configs:
            raise ImageNotFound(name)
        return f"/state/images/{name}/rootfs"

    def config(self, name: str) -> ImageConfig:
        self.rootfs(name)
        return self.configs[name]


CONFIG = ImageConfig(env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, entrypoint=("/usr/bin/python3",),
                     cmd=("-c", "print(1)"), working_dir="/srv", user="app")
DEFAULTS = NodeDefaults(rootfs="/rootfs", images=Store(CONFIG))


def test_the_image_gives_env_workdir_and_command_under_the_jobs_own():
    spec = to_runtime_spec(JOB, JobSpec("echo $LANG", env={"LANG": "C"}, image="debian"), DEFAULTS)
    assert (spec.rootfs, spec.argv, spec.cwd) == ("/state/images/debian/rootfs", ["/bin/sh", "-c", "echo $LANG"], "/srv")
    assert spec.user == "app"  # the runtime resolves it in the image's /etc/passwd
    assert spec.env == {"PATH": "/usr/bin:/bin", "LANG": "C"}
    spec = to_runtime_spec(JOB, JobSpec("", image="debian"), DEFAULTS)
    assert spec.argv == ["/usr/bin/python3", "-c", "print(1)"]


def test_a_job_without_an_image_runs_on_the_nodes_rootfs_as_before():
    spec = to_runtime_spec(JOB, JobSpec("true", env={"A": "1"}), DEFAULTS)
    assert (spec.rootfs, spec.argv, spec.env, spec.cwd, spec.user) == ("/rootfs", ["/bin/sh", "-c", "true"], {"A": "1"},
                                                                       "/", "")


def test_an_image_that_is_gone_or_has_no_command_is_an_error_not_a_traceback():
    with pytest.raises(ImageNotFound, match="no image named 'nosuch' on this node"):
        to_runtime_spec(JOB, JobSpec("true", image="nosuch"), DEFAULTS)
    bare = NodeDefaults(rootfs="/rootfs", images=Store(ImageConfig()))
    with pytest.raises(InvalidSpec, match="no command and its image has no Entrypoint or Cmd"):
        to_runtime_spec(JOB, JobSpec("", image="debian"), bare)
    with pytest.raises(ImageNotFound):
        to_runtime_spec(JOB, JobSpec("true", image="debian"), NodeDefaults(rootfs="/rootfs"))


@pytest.mark.parametrize("spec, message", [
    (JobSpec(""), "empty command"),
    (JobSpec("  ", image="debian"), "empty command"),
    (JobSpec("true", image="Debian"), "invalid image name 'Debian'"),
    (JobSpec("true", image="../x"), "invalid image name"),
    (JobSpec("true", image=".tmp-x"), "invalid image name"),
])
def test_spec_rules_for_images(spec, message):
    with pytest.raises(InvalidSpec, match=message):
        spec.validate()


def test_an_empty_command_is_allowed_with_an_image_and_the_image_round_trips():
    spec = JobSpec("", image="debian")
    spec.validate()
    record = JobRecord(id=JOB, spec=spec)
    assert JobRecord.from_bytes(record.to_bytes(), JOB).spec.image == "debian"
    assert "image" not in json.loads(JobRecord(id=JOB, spec=JobSpec("true")).to_bytes())["spec"]  # as before images


def test_records_with_a_bad_image_are_refused():
    data = JobRecord(id=JOB, spec=JobSpec("true")).to_json()
    data["spec"]["image"] = "../../etc"
    with pytest.raises(RecordError, match="invalid image name"):
        JobRecord.from_json(data, JOB)
    data["spec"]["image"] = 7
    with pytest.raises(RecordError, match="'image' is the number 7"):
        JobRecord.from_json(data, JOB)
    node = json.loads(NodeInfo("n1", "", 1, images=["busybox"]).to_bytes())
    assert NodeInfo.from_bytes(json.dumps(node).encode(), "n1").images == ["busybox"]
    for bad in (["../x"], [3], "busybox"):
        node["images"] = bad
        with pytest.raises(RecordError):
            NodeInfo.from_bytes(json.dumps(node).encode(), "n1")


class FakeImages:
    def __init__(self) -> None:
        self.stamp_value, self.listed, self.commandless, self.reads = 1, ["busybox"], ["busybox"], 0

    def stamp(self):
        return self.stamp_value

    def names(self):
        self.reads += 1
        if isinstance(self.listed, Exception):
            raise self.listed
        return list(self.listed)

    def without_command(self):
        return list(self.commandless)


def test_the_node_registers_again_only_when_its_store_changed_and_its_images_did():
    from memstore import MemStore

    from lclusterd.cluster.keys import Keys
    from lclusterd.cluster.node import NodeSession

    keys, images = Keys("/t"), FakeImages()
    session = NodeSession(MemStore(), keys, NodeInfo("n1", "", 1), images=images)
    assert session._images_changed() and session.info.images == ["busybox"]
    session._register_new_lease()
    published = lambda: NodeInfo.from_bytes(session.store.get(keys.node("n1")).value, "n1")  # noqa: E731
    assert (published().images, published().images_without_command) == (["busybox"], ["busybox"])
    images.listed = ["busybox", "debian"]
    assert not session._images_changed() and images.reads == 1  # same stamp: not even listed
    images.stamp_value, images.listed = 2, ["busybox"]
    assert not session._images_changed() and images.reads == 2  # listed again, nothing new
    images.stamp_value, images.listed = 3, ["busybox", "debian"]
    assert session._images_changed() and session.info.images == ["busybox", "debian"]
    images.stamp_value = None  # changed a moment ago: listed on every look until it settles
    assert not session._images_changed() and not session._images_changed() and images.reads == 5
    images.stamp_value, images.listed = 4, OSError(5, "I/O error")
    assert not session._images_changed() and session.info.images == ["busybox", "debian"]  # kept, logged


def test_the_stores_stamp_moves_with_each_image_put_in_place(tmp_path):
    from lclusterd.runtime.images.store import ImageStore

    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    store = ImageStore(tmp_path / "state", str(rootfs))
    assert (store.stamp(), store.names(), store.without_command()) == ((0, 0), ["busybox"], ["busybox"])
    work = tmp_path / "state" / "images" / ".tmp-x"
    work.mkdir(parents=True)
    assert store.stamp() is None  # changed just now: looked at again until it settles
    os.utime(work.parent, (1_700_000_000, 1_700_000_000))
    before = store.stamp()
    (work / "image.json").write_text("{}")
    assert store.stamp() == before is not None and store.names() == ["busybox"]  # a work directory is no image
    work.rename(work.parent / "x")
    assert store.stamp() is None and store.names() == ["busybox", "x"]
    os.utime(work.parent, (1_700_000_001, 1_700_000_001))
    assert store.stamp() not in (None, before)


def test_run_as_names_the_user_of_one_job_over_its_images():
    spec = to_runtime_spec(JOB, JobSpec("id", image="debian", run_as="nobody:nogroup"), DEFAULTS)
    assert spec.user == "nobody:nogroup"  # over the image's User "app"
    assert to_runtime_spec(JOB, JobSpec("id", run_as="1000"), DEFAULTS).user == "1000"  # the node's rootfs
    record = JobRecord(id=JOB, spec=JobSpec("id", run_as="1000:1000"))
    assert JobRecord.from_bytes(record.to_bytes(), JOB).spec.run_as == "1000:1000"
    assert "run_as" not in json.loads(JobRecord(id=JOB, spec=JobSpec("id")).to_bytes())["spec"]  # as before -run-as
    for bad in ("a:b:c", ":5", "x:", "1:99999999999", "a\nb", "x" * 300):
        with pytest.raises(InvalidSpec, match="user "):
            JobSpec("id", run_as=bad).validate()
    data = record.to_json()
    for bad, words in (("a:b:c", "out of range: user 'a:b:c'"), (7, "'run_as' is the number 7")):
        data["spec"]["run_as"] = bad  # a forged record is refused, not run as whatever it says
        with pytest.raises(RecordError, match=words):
            JobRecord.from_json(data, JOB)
