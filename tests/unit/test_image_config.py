"""An image's config as a job's defaults, and their merge with the job's own options, as data."""

from __future__ import annotations

import json

import pytest

from lclusterd.errors import InvalidImage, InvalidSpec
from lclusterd.runtime.images.config import ImageConfig, apply_defaults, host_architecture
from lclusterd.runtime.spec import RuntimeSpec

DIFF = "sha256:" + "a" * 64


def config(run: dict | None = None, **top) -> bytes:
    return json.dumps({"architecture": host_architecture(), "os": "linux", "config": run,
                       "rootfs": {"type": "layers", "diff_ids": [DIFF]}, **top}).encode()


IMAGE = ImageConfig.from_bytes(config({"Env": ["PATH=/opt/bin:/bin", "LANG=C.UTF-8", "EMPTY="],
                                       "Entrypoint": ["/entry"], "Cmd": ["--serve", "8080"],
                                       "WorkingDir": "/srv", "User": "app:app", "Labels": {"kept": "as bytes"}}))


def test_the_config_gives_env_command_workdir_user_and_diff_ids():
    assert IMAGE.env == {"PATH": "/opt/bin:/bin", "LANG": "C.UTF-8", "EMPTY": ""}
    assert (IMAGE.entrypoint, IMAGE.cmd) == (("/entry",), ("--serve", "8080"))
    assert (IMAGE.working_dir, IMAGE.user, IMAGE.diff_ids) == ("/srv", "app:app", (DIFF,))


def test_a_config_without_run_settings_gives_no_defaults():
    bare = ImageConfig.from_bytes(config(None))
    assert (bare.env, bare.entrypoint, bare.cmd, bare.working_dir, bare.user) == ({}, (), (), "", "")


@pytest.mark.parametrize("raw, reason", [
    (b"{nope", "not JSON"),
    (b"[]", "not a JSON object"),
    (config({"Env": ["NOEQUALS"]}), "Env entry 'NOEQUALS' is not NAME=VALUE"),
    (config({"Env": ["1BAD=x"]}), "invalid environment variable name '1BAD'"),
    (config({"Env": "PATH=/bin"}), "Env is not a list of strings"),
    (config({"Cmd": ["/bin/sh", 3]}), "Cmd is not a list of strings"),
    (config({"WorkingDir": "relative"}), "WorkingDir 'relative' is not an absolute path"),
    (config({"User": 0}), "User is not a string"),
    (config({"User": "a:b:c"}), "user 'a:b:c' is not USER or USER:GROUP"),
    (config({"User": ":1000"}), "is not USER or USER:GROUP"),
    (config({"User": "99999999999"}), "ids go from 0 to 4294967294, not 99999999999"),
    (config([]), "config is not an object"),
    (config({}, rootfs={"type": "layers", "diff_ids": ["md5:x"]}), "diff_ids is not a list of sha256 digests"),
    (config({}, rootfs=None), "rootfs is not"),
])
def test_a_malformed_config_is_refused_at_import(raw, reason):
    with pytest.raises(InvalidImage, match="malformed image config") as refused:
        ImageConfig.from_bytes(raw)
    assert reason in str(refused.value)


def test_an_image_for_another_platform_is_refused():
    other = "s390x" if host_architecture() != "s390x" else "amd64"
    with pytest.raises(InvalidImage, match=f"the image is for linux/{other}; this node runs linux/{host_architecture()}"):
        ImageConfig.from_bytes(config({}, architecture=other)).check_platform()
    with pytest.raises(InvalidImage, match="the image is for windows, not linux"):
        ImageConfig.from_bytes(config({}, os="windows")).check_platform()
    ImageConfig.from_bytes(config({}, architecture=None, os=None)).check_platform()  # unsaid: taken as this host's


# -- the merge: the job's own options win -----------------------------------------------

def test_a_job_without_a_command_runs_entrypoint_then_cmd_with_the_images_settings():
    merged = apply_defaults(IMAGE)
    assert merged.argv == ["/entry", "--serve", "8080"]
    assert (merged.env, merged.cwd, merged.user) == (IMAGE.env, "/srv", "app:app")


def test_the_jobs_command_replaces_entrypoint_and_cmd_together():
    assert apply_defaults(IMAGE, ["/bin/sh", "-c", "make"]).argv == ["/bin/sh", "-c", "make"]
    assert apply_defaults(IMAGE, []).argv == ["/entry", "--serve", "8080"]  # empty is no command
    only_cmd = ImageConfig(cmd=("/bin/bash",))
    assert apply_defaults(only_cmd).argv == ["/bin/bash"]


def test_the_jobs_variables_override_the_images_one_by_one():
    merged = apply_defaults(IMAGE, ["true"], env={"LANG": "C", "EXTRA": "1"})
    assert merged.env == {"PATH": "/opt/bin:/bin", "LANG": "C", "EMPTY": "", "EXTRA": "1"}
    assert IMAGE.env["LANG"] == "C.UTF-8"  # the image's own defaults are not changed


def test_the_jobs_cwd_and_user_win_and_an_empty_user_means_root():
    merged = apply_defaults(IMAGE, ["true"], cwd="/tmp", user="")
    assert (merged.cwd, merged.user) == ("/tmp", "")
    assert apply_defaults(ImageConfig(), ["true"]).cwd == "/"


def test_no_command_at_all_is_refused():
    with pytest.raises(InvalidSpec, match="the job has no command and its image has no Entrypoint or Cmd"):
        apply_defaults(ImageConfig(env={"A": "1"}))


def test_the_result_is_a_runtime_specs_fields():
    spec = RuntimeSpec(job_id="j1", rootfs="/images/x/rootfs", **apply_defaults(IMAGE, env={"B": "2"}).spec_fields())
    spec.validate()
    assert (spec.argv, spec.cwd, spec.user) == (["/entry", "--serve", "8080"], "/srv", "app:app")
    assert spec.job_environment()["PATH"] == "/opt/bin:/bin"  # the image's PATH over the runtime's default
    assert spec.job_environment()["B"] == "2"
