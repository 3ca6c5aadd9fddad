"""A real job in an imported image, through the runtime (Launcher), in both user-namespace
modes (the `runtime` fixture's ids say which): the image's tree is the overlay's lower
layer, its config gives the job's defaults, its owners and modes are what the job sees,
and its setuid file cannot raise anything."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from lclusterd.runtime.images.config import apply_defaults
from lclusterd.runtime.images.store import ImageStore
from lclusterd.runtime.spec import RuntimeSpec

from support.host import ROOTFS
from support.images import snapshot, umoci_image


@pytest.fixture(autouse=True)
def nothing_leaks(runtime):
    yield
    assert runtime.leftovers() == []


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """The umoci image, imported into a store of its own (on disk, where idmapped mounts work)."""
    work = tmp_path_factory.mktemp("image")
    store = ImageStore(work / "state", ROOTFS)
    store.import_image("bb", str(umoci_image(work)))
    return store


def run(runtime, image: ImageStore, tmp_path: Path, command: str | None = None, **job) -> tuple[str, str, int]:
    """Run a job in the image, its defaults applied as the control plane will; (stdout, stderr, exit code)."""
    defaults = apply_defaults(image.config("bb"), ["/bin/sh", "-c", command] if command else None, **job)
    job_id = uuid.uuid4().hex
    out, err = tmp_path / f"{job_id}.out", tmp_path / f"{job_id}.err"  # log files are appended to
    spec = RuntimeSpec(job_id=job_id, rootfs=image.rootfs("bb"), stdout_path=str(out), stderr_path=str(err),
                       **defaults.spec_fields())
    result = runtime.launcher.run(spec, timeout=60)
    assert result.status == "EXITED", result
    return out.read_text(), err.read_text(), result.exit_code


def test_a_job_without_a_command_runs_the_images_cmd_in_its_workdir_with_its_env(runtime, image, tmp_path):
    out, err, code = run(runtime, image, tmp_path)
    assert (out, err, code) == ("image default command\n", "", 0)
    out, _, _ = run(runtime, image, tmp_path, 'echo "$GREETING|$PATH|$(pwd)"')
    assert out == "from the image|/bin:/usr/bin|/home/user\n"


def test_the_jobs_own_options_win_over_the_images(runtime, image, tmp_path):
    out, _, _ = run(runtime, image, tmp_path, 'echo "$GREETING|$(pwd)"', env={"GREETING": "the job's"}, cwd="/tmp")
    assert out == "the job's|/tmp\n"


def test_the_job_sees_the_images_tree_with_its_owners_and_modes(runtime, image, tmp_path):
    out, err, code = run(runtime, image, tmp_path,
                         "stat -c '%n %u:%g %a' /home/user/file /usr/bin/suid; cat /home/user/file; test -e /gone.txt "
                         "|| echo gone; ls /d; readlink /absolute-link")
    assert code == 0, err
    assert out.splitlines() == ["/home/user/file 1000:1000 640", "/usr/bin/suid 0:0 4755", "the user's", "gone", "z",
                                "/etc/passwd"]


def test_a_setuid_file_of_the_image_raises_nothing(runtime, image, tmp_path):
    """The job's root is on a nosuid overlay and the job has no_new_privs: exec of a setuid
    file keeps the caller's ids, whatever the file's owner and mode."""
    out, _, _ = run(runtime, image, tmp_path,
                    "grep NoNewPrivs /proc/self/status; awk '$5 == \"/\" { print $6 }' /proc/self/mountinfo")
    no_new_privs, options = out.splitlines()
    assert no_new_privs.split() == ["NoNewPrivs:", "1"]
    assert "nosuid" in options.split(",")


def test_what_a_job_writes_stays_out_of_the_image(runtime, image, tmp_path):
    before = snapshot(image.rootfs("bb"))
    out, err, code = run(runtime, image, tmp_path, "echo x > /new; rm -rf /d /etc/passwd; chmod 000 /bin; echo wrote")
    assert (out, code) == ("wrote\n", 0), err
    assert snapshot(image.rootfs("bb")) == before
