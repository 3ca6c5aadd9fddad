"""A real job in an imported image, through the runtime (Launcher), in both user-namespace
modes (the `runtime` fixture's ids say which): the image's tree is the overlay's lower
layer, its config gives the job's defaults (its User included, names from the image's own
/etc/passwd and /etc/group), its owners and modes are what the job sees, and its setuid file
cannot raise anything."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from lclusterd.errors import ImageInUse
from lclusterd.runtime.images.config import apply_defaults
from lclusterd.runtime.images.store import ImageStore
from lclusterd.runtime.spec import RunResult, RuntimeSpec

from support.host import ROOTFS
from support.images import run_image_cli, snapshot, umoci_image, umoci_users_image
from support.jobs import until


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


@pytest.fixture(scope="module")
def host_passwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file of the host that names the user hostonly: the hostile image's /etc/passwd links to it."""
    path = tmp_path_factory.mktemp("host") / "passwd"
    path.write_text("hostonly:x:4242:4242::/host:/bin/sh\n")
    return path


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory, host_passwd: Path) -> ImageStore:
    """The images of umoci_users_image, imported: `app`, `nosuch` and `hostile`."""
    work = tmp_path_factory.mktemp("users")
    layout = umoci_users_image(work, host_passwd)
    store = ImageStore(work / "state", ROOTFS)
    for tag in ("app", "nosuch", "hostile"):
        store.import_image(tag, str(layout), ref=tag)
    return store


def start(runtime, image: ImageStore, tmp_path: Path, command: str | None = None, name: str = "bb",
          **job) -> tuple[RunResult, str, str]:
    """Run a job in the image `name`, its defaults applied as the control plane will; (result, stdout, stderr)."""
    defaults = apply_defaults(image.config(name), ["/bin/sh", "-c", command] if command else None, **job)
    job_id = uuid.uuid4().hex
    out, err = tmp_path / f"{job_id}.out", tmp_path / f"{job_id}.err"  # log files are appended to
    spec = RuntimeSpec(job_id=job_id, rootfs=image.rootfs(name), stdout_path=str(out), stderr_path=str(err),
                       **defaults.spec_fields())
    result = runtime.launcher.run(spec, timeout=60)
    return result, out.read_text() if out.exists() else "", err.read_text() if err.exists() else ""


def run(runtime, image: ImageStore, tmp_path: Path, command: str | None = None, **job) -> tuple[str, str, int]:
    """start(), which must have EXITED: (stdout, stderr, exit code)."""
    result, out, err = start(runtime, image, tmp_path, command, **job)
    assert result.status == "EXITED", result
    return out, err, result.exit_code


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
    # as root (the job's own user wins over the image's 1000:1000), who may write anywhere in its root
    out, err, code = run(runtime, image, tmp_path, "echo x > /new; rm -rf /d /etc/passwd; chmod 000 /bin; echo wrote",
                         user="0")
    assert (out, code) == ("wrote\n", 0), err
    assert snapshot(image.rootfs("bb")) == before


# -- the image's User -------------------------------------------------------------------

def test_the_images_user_runs_the_job_and_owns_what_it_makes(runtime, image, tmp_path):
    """The image's User is 1000:1000 (its /etc/passwd names 1000 `user`, home /home/user)."""
    out, err, code = run(runtime, image, tmp_path, "id -u; id -g; echo $HOME; touch /tmp/made; stat -c %u:%g /tmp/made; "
                         "grep CapEff /proc/self/status; touch /made || echo not root")
    assert (out.splitlines(), code) == (["1000", "1000", "/home/user", "1000:1000", "CapEff:\t0000000000000000",
                                         "not root"], 0), err
    out, _, _ = run(runtime, image, tmp_path, "id -u; id -g", user="0")  # the job's own user wins
    assert out == "0\n0\n"


def test_a_user_named_by_the_image_takes_its_ids_groups_and_home_from_the_images_files(runtime, users, tmp_path):
    result, out, err = start(runtime, users, tmp_path, "id -u; id -g; id -G; id -un; id -gn; echo $HOME", name="app")
    assert (result.status, err) == ("EXITED", ""), result
    assert out.splitlines() == ["1234", "1235", "1235 2000", "app", "appgroup", "/home/app"]


def test_a_user_the_image_does_not_name_fails_the_job_with_one_line(runtime, users, tmp_path):
    result, out, _ = start(runtime, users, tmp_path, "echo ran", name="nosuch")
    assert (result.status, result.error, out) == ("FAILED", "user nosuch: no such user in the image's /etc/passwd", "")


def test_an_images_passwd_linked_out_of_the_image_is_not_followed_to_the_hosts(runtime, users, host_passwd, tmp_path):
    assert "hostonly" in host_passwd.read_text()  # the host file the link climbs to names the user
    result, out, _ = start(runtime, users, tmp_path, "echo ran", name="hostile")
    assert (result.status, result.error, out) == ("FAILED", "user hostonly: no such user in the image's /etc/passwd",
                                                  "")


# -- an image in use --------------------------------------------------------------------

def test_an_image_a_job_runs_on_is_neither_removed_nor_replaced_until_the_job_has_ended(runtime, tmp_path):
    store = ImageStore(tmp_path / "state", ROOTFS)
    layout = str(umoci_image(tmp_path / "layout"))
    store.import_image("inuse", layout)
    defaults = apply_defaults(store.config("inuse"), ["/bin/sh", "-c", "echo up; sleep 60"], user="0")
    out = tmp_path / "job.out"
    spec = RuntimeSpec(job_id=uuid.uuid4().hex, rootfs=store.rootfs("inuse"), stdout_path=str(out),
                       stderr_path=str(tmp_path / "job.err"), **defaults.spec_fields())
    runtime.launcher.submit(spec)
    until(lambda: out.exists() and out.read_text() == "up\n", "the job to start")
    tree = snapshot(store.rootfs("inuse"))
    refused = "image 'inuse' is in use by a job running on this node: remove or replace it once its jobs have ended"
    with pytest.raises(ImageInUse, match=refused):
        store.remove("inuse")
    with pytest.raises(ImageInUse, match=refused):
        store.import_image("inuse", layout, replace=True)
    state = ["--state-dir", str(tmp_path / "state"), "--rootfs", ROOTFS]
    assert run_image_cli("rm", "inuse", *state) == (1, "", f"lclusterd image: {refused}\n")
    assert snapshot(store.rootfs("inuse")) == tree and "inuse" in {info.name for info in store.list()}
    runtime.launcher.kill(spec.job_id, 0)
    assert runtime.launcher.wait(spec.job_id, 30).status == "KILLED"
    assert run_image_cli("rm", "inuse", *state) == (0, "removed inuse\n", "")
    assert [info.name for info in store.list()] == ["busybox"]
