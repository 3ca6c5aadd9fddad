"""Volumes for real, through the runtime (Launcher), in both user-namespace modes (ids say
which): a host directory beneath the node's --volume-root bound into the job, nosuid and
nodev, read-only in the kernel with :ro; never a directory outside the root, whatever
symbolic link is placed in it or in the image; what the job's root may write in a volume;
nothing left on the host's mount table (docs/container.md, "Volumes")."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lclusterd.errors import InvalidSpec, RuntimeUnavailable
from lclusterd.runtime import kernel, userns
from lclusterd.runtime.launcher import Launcher
from lclusterd.runtime.spec import RunResult, RuntimeSpec

from conftest import DRIVER_ID, RuntimeUnderTest, network_for, user_namespaces
from support.host import ROOTFS

NO_ROOTS = "this node allows no volumes: start lclusterd with --volume-root DIR"


class VolumeRuntime(RuntimeUnderTest):
    """A fork server of this module's own, with one volume root (on disk)."""

    root: Path

    def run(self, command: str, volumes: list[str], rootfs: str = ROOTFS, **kw) -> tuple[RunResult, str, str]:
        """Run a shell command line with these volumes; the result, its stdout and stderr."""
        job_id = uuid.uuid4().hex
        out, err = self.state_dir.parent / f"{job_id}.out", self.state_dir.parent / f"{job_id}.err"
        try:
            result = self.launcher.run(RuntimeSpec.shell(job_id, command, rootfs, volumes=volumes, stdout_path=str(out),
                                                         stderr_path=str(err), **kw), timeout=60)
            return result, out.read_text() if out.exists() else "", err.read_text() if err.exists() else ""
        finally:
            out.unlink(missing_ok=True)
            err.unlink(missing_ok=True)

    def host_mounts(self) -> list[str]:
        """The host's mounts of anything under the volume root: a job must never leave one."""
        with open("/proc/self/mountinfo") as f:
            return [line for line in f if str(self.root) in line]


@pytest.fixture(scope="module", params=["userns", "no-userns"], ids=lambda mode: f"{DRIVER_ID}-{mode}")
def vr(request: pytest.FixtureRequest):
    work = Path(tempfile.mkdtemp(prefix="lclusterd-volumes-", dir="/var/tmp"))
    root, state_dir = work / "root", work / "state"
    root.mkdir()
    parent = f"lclusterd-test-{os.getpid()}-volumes-{request.param}"
    network = network_for(request.param, salt=4800)
    launcher = Launcher(state_dir, cgroup_parent=parent, network=network, volume_roots=[str(root)],
                        userns=user_namespaces() if request.param == "userns" else None)
    launcher.start()
    runtime = VolumeRuntime(launcher, state_dir, parent, request.param == "userns", network)
    runtime.root = root
    yield runtime
    launcher.close()
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(autouse=True)
def nothing_leaks(request: pytest.FixtureRequest):
    yield
    if "vr" in request.fixturenames:
        vr = request.getfixturevalue("vr")
        assert vr.leftovers() == []
        assert vr.host_mounts() == []


@pytest.fixture
def data(vr) -> Path:
    """A fresh directory beneath the root holding one file, readable by anyone."""
    path = vr.root / uuid.uuid4().hex
    path.mkdir(mode=0o755)
    (path / "file").write_text("from the host\n")
    return path


# -- what a job sees ---------------------------------------------------------------------

def test_a_job_reads_host_data_through_a_volume(vr, data):
    result, out, err = vr.run("cat /data/file; ls /data", [f"{data}:/data"])
    assert (result.status, result.exit_code, err) == ("EXITED", 0, "")
    assert out == "from the host\nfile\n"
    result, out, _ = vr.run("ls /all", [f"{vr.root}:/all:ro"])  # the root itself is beneath itself
    assert result.status == "EXITED" and data.name in out.split()


def test_a_read_only_volume_cannot_be_written_nor_remounted_writable(vr, data):
    """EROFS from the kernel: the directory and file are anyone's to write, only the mount
    is read-only. A remount fails: the job has no CAP_SYS_ADMIN over its mount namespace, and
    seccomp refuses mount."""
    os.chmod(data, 0o777)
    os.chmod(data / "file", 0o666)
    result, out, err = vr.run("echo x > /data/file || echo write; mkdir /data/d || echo mkdir; "
                              "mount -o remount,rw /data || echo remount; echo y > /data/file || echo again",
                              [f"{data}:/data:ro"])
    assert result.status == "EXITED", result
    assert out.split() == ["write", "mkdir", "remount", "again"]
    assert err.count("Read-only file system") == 3, err
    assert (data / "file").read_text() == "from the host\n" and sorted(os.listdir(data)) == ["file"]


def test_volumes_are_nosuid_and_nodev_and_ro_only_with_ro(vr, data):
    (data / "sub").mkdir()
    result, out, _ = vr.run("awk '$5 == \"/data\" || $5 == \"/more\" { print $5, $6 }' /proc/self/mountinfo",
                            [f"{data}:/data:ro", f"{data}/sub:/more"])
    assert result.status == "EXITED", result
    options = {line.split()[0]: set(line.split()[1].split(",")) for line in out.splitlines()}
    assert {"ro", "nosuid", "nodev"} <= options["/data"]
    assert {"rw", "nosuid", "nodev"} <= options["/more"] and "ro" not in options["/more"]


def test_a_volume_at_the_working_directory_and_nested_volumes(vr, data):
    (data / "inner").mkdir()
    other = vr.root / uuid.uuid4().hex
    other.mkdir(mode=0o755)
    (other / "note").write_text("inner volume\n")
    result, out, err = vr.run("pwd; cat file; cat inner/note; cat /tmp/v/note", [f"{other}:/data/inner", f"{data}:/data",
                                                                                 f"{other}:/tmp/v:ro"], cwd="/data")
    assert (result.status, err) == ("EXITED", ""), result
    assert out == "/data\nfrom the host\ninner volume\ninner volume\n"


# -- what a job's root may write -------------------------------------------------------

def test_what_the_jobs_root_may_write_in_a_volume(vr, data):
    """With a user namespace the job's root is a host uid of its own slot, nobody to the
    host's files: it writes only where others may (0777), and what it makes is owned by its
    mapped uid on the host. Without one it is the host's root and writes anywhere."""
    (data / "open").mkdir()
    os.chmod(data / "open", 0o777)
    result, out, err = vr.run("touch /data/closed || echo closed refused; touch /data/open/made && echo open written",
                              [f"{data}:/data"])
    assert result.status == "EXITED", result
    if vr.userns:
        assert out.splitlines() == ["closed refused", "open written"] and "Permission denied" in err
        assert not (data / "closed").exists()
        owner = (data / "open" / "made").stat().st_uid
        ranges = userns.subordinate_ranges()
        assert ranges.uids.start <= owner < ranges.uids.start + ranges.uids.count
        assert (owner - ranges.uids.start) % userns.SLOT_SIZE == 0  # the job's uid 0
    else:
        assert out.splitlines() == ["open written"] and err == ""
        assert (data / "closed").stat().st_uid == 0 and (data / "open" / "made").stat().st_uid == 0


def test_a_jobs_user_writes_in_a_volume_as_its_own_uid(vr, data):
    """A job's User (here 1000:1000) writes where that user may: a 0777 directory, not one only
    root may write. On the host what it makes is owned by its uid as the job's user namespace
    maps it (the slot's base + 1000), or by host uid 1000 without one."""
    (data / "open").mkdir()
    os.chmod(data / "open", 0o777)
    result, out, err = vr.run("touch /data/closed || echo closed refused; touch /data/open/made && echo open written",
                              [f"{data}:/data"], user="1000:1000")
    assert result.status == "EXITED", result
    assert out.splitlines() == ["closed refused", "open written"] and "Permission denied" in err
    owner = (data / "open" / "made").stat()
    if vr.userns:
        ranges = userns.subordinate_ranges()
        assert (owner.st_uid - ranges.uids.start) % userns.SLOT_SIZE == 1000
        assert (owner.st_gid - ranges.gids.start) % userns.SLOT_SIZE == 1000
        assert ranges.uids.start <= owner.st_uid < ranges.uids.start + ranges.uids.count
    else:
        assert (owner.st_uid, owner.st_gid) == (1000, 1000)


# -- refusals --------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["/etc", "../../..", "/"])
def test_a_symlink_in_the_root_that_leads_out_of_it_is_refused(vr, data, target):
    (data / "link").symlink_to(target)
    result, _, _ = vr.run("ls /data", [f"{data}/link:/data"])
    assert (result.status, result.error) == ("FAILED", f"volume {data}/link: leads out of --volume-root {vr.root} "
                                             "(a symbolic link or '..' on its way points outside)")
    result, _, _ = vr.run("ls /data", [f"{data}/link/etc:/data"])  # a link half-way is no better
    assert result.status == "FAILED" and "leads out of --volume-root" in result.error


def test_a_symlink_that_stays_beneath_the_root_is_followed(vr, data):
    (data / "link").symlink_to(f"../{data.name}")
    result, out, _ = vr.run("cat /data/file", [f"{data}/link:/data"])
    assert (result.status, out) == ("EXITED", "from the host\n")


def test_a_volume_outside_the_roots_or_missing_or_not_a_directory_is_refused(vr, data):
    for host, why in (("/etc", f"not under any --volume-root of this node (allowed: {vr.root})"),
                      (f"{vr.root}x", f"not under any --volume-root of this node (allowed: {vr.root})"),
                      (f"{data}/none", "does not exist"), (f"{data}/file", "is not a directory")):
        result, _, _ = vr.run("true", [f"{host}:/data"])
        assert (result.status, result.error) == ("FAILED", f"volume {host}: {why}")


def test_a_node_without_volume_roots_refuses_every_volume_saying_how_to_allow_them(runtime, tmp_path):
    result = runtime.launcher.run(RuntimeSpec.shell(uuid.uuid4().hex, "true", ROOTFS, volumes=[f"{tmp_path}:/data"]),
                                  timeout=60)
    assert (result.status, result.error) == ("FAILED", f"volume {tmp_path}: {NO_ROOTS}")
    assert runtime.leftovers() == []


@pytest.mark.parametrize("entry, why", [("data:/data", "volume paths must be absolute"),
                                        ("/a:/data:rx", "volume takes HOST:PATH"),
                                        ("/a:/proc/x", "no volume can go at or under /proc, /sys, /dev"),
                                        ("/a:/dev", "no volume can go at or under")])
def test_a_malformed_volume_is_refused_at_submit(vr, entry, why):
    with pytest.raises(InvalidSpec, match=why.replace("(", r"\(")):
        vr.launcher.submit(RuntimeSpec.shell(uuid.uuid4().hex, "true", ROOTFS, volumes=[entry]))


def test_a_volume_root_that_does_not_exist_fails_the_runtimes_start(tmp_path):
    launcher = Launcher(tmp_path / "state", cgroup_parent=f"lclusterd-test-{os.getpid()}-noroot",
                        volume_roots=[str(tmp_path / "missing")])
    with pytest.raises(RuntimeUnavailable, match=f"--volume-root {tmp_path}/missing is not an existing directory"):
        launcher.start()


# -- hostile images and races ----------------------------------------------------------

@pytest.fixture(scope="module")
def hostile_rootfs() -> Iterator[Path]:
    """A copy of the rootfs whose would-be mount points are symbolic links out of the job's
    root: to the host's /, to /etc, and up past the top. Beside the rootfs, not under /tmp:
    a job's root is an idmapped mount, which tmpfs (the v2 VM's /tmp) takes only from 6.3."""
    rootfs = Path(ROOTFS).parent / f"test-hostile-{os.getpid()}"
    subprocess.run(["cp", "-a", ROOTFS, str(rootfs)], check=True)
    (rootfs / "to-root").symlink_to("/")
    (rootfs / "to-etc").symlink_to("/etc")
    (rootfs / "up").symlink_to("../../../../../../..")
    yield rootfs
    shutil.rmtree(rootfs)


def test_an_image_symlink_cannot_redirect_a_volume_out_of_the_jobs_root(vr, data, hostile_rootfs):
    """The mount point is resolved inside the job's root: /to-etc is the job's own /etc, and
    a link to / (or up past it) is the job's root, which no volume may cover."""
    host_etc = os.stat("/etc")
    result, out, _ = vr.run("cat /etc/file; ls /to-etc/", [f"{data}:/to-etc:ro"], rootfs=str(hostile_rootfs))
    assert (result.status, out) == ("EXITED", "from the host\nfile\n"), result
    assert os.path.exists("/etc/passwd") and os.stat("/etc") == host_etc
    for place in ("/to-root", "/up"):
        result, _, _ = vr.run("true", [f"{data}:{place}"], rootfs=str(hostile_rootfs))
        assert result.status == "FAILED"
        assert result.error == (f"volume {place}: mount point {place} is the job's root "
                                "(a symbolic link in the image leads there)")
    result, out, _ = vr.run("ls /to-root/data", [f"{data}:/to-root/data"], rootfs=str(hostile_rootfs))
    assert (result.status, out) == ("EXITED", "file\n")  # the job's /data, made in its own layer
    assert not os.path.exists("/data")


def test_a_directory_swapped_for_a_symlink_out_stays_refused(vr, data):
    """Resolution happens once, on a descriptor, and the mount is cloned from it: a run
    before the swap reads the directory, one after is refused; never the outside."""
    place = data / "swap"
    place.mkdir()
    (place / "marker").write_text("inside\n")
    result, out, _ = vr.run("cat /data/marker", [f"{place}:/data"])
    assert (result.status, out) == ("EXITED", "inside\n")
    place.rename(data / "old")
    place.symlink_to("/etc")
    result, _, _ = vr.run("cat /data/marker", [f"{place}:/data"])
    assert result.status == "FAILED" and "leads out of --volume-root" in result.error


def test_jobs_started_while_a_symlink_is_swapped_in_and_out_never_see_outside(vr, data):
    """A thread swaps the volume's directory and a link to the host's /etc as fast as it can
    while jobs start: each either reads the directory or is refused."""
    place, inside, outside = data / "swap", data / "inside", data / "outside"
    inside.mkdir()
    (inside / "marker").write_text("inside\n")
    outside.symlink_to("/etc")
    place.symlink_to("inside")
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            kernel.rename(str(place), str(outside), kernel.RENAME_EXCHANGE)  # in one step: place always exists

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        seen = [vr.run("cat /data/marker 2>&1 || ls /data", [f"{place}:/data"]) for _ in range(12)]
    finally:
        stop.set()
        swapper.join()
    for result, out, _ in seen:
        assert (result.status == "EXITED" and out == "inside\n") or (
            result.status == "FAILED" and "leads out of --volume-root" in result.error), (result, out)


def test_the_runtime_cli_takes_volumes_roots_and_a_workdir(vr, data):
    cli = [sys.executable, "-m", "lclusterd.runtime", "run", "--state-dir", str(vr.state_dir.parent / "cli"),
           "--cgroup-parent", f"lclusterd-test-{os.getpid()}-volcli", "--userns", "on" if vr.userns else "off"]
    done = subprocess.run([*cli, "--volume-root", str(vr.root), "--volume", f"{data}:/data:ro", "--workdir", "/data",
                           "--sh", "pwd; cat file"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "/data\nfrom the host\n"), done.stderr
    done = subprocess.run([*cli, "--volume", f"{data}:/data", "--sh", "true"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 125 and done.stderr.splitlines()[-1].endswith(f"(volume {data}: {NO_ROOTS})")
    done = subprocess.run([*cli, "--volume", "data", "--sh", "true"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "volume takes HOST:PATH" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([*cli, "--volume-root", f"{vr.root}/none", "--sh", "true"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and f"--volume-root {vr.root}/none is not an existing directory" in done.stderr
    assert stat.S_ISDIR(os.stat(vr.root).st_mode)
