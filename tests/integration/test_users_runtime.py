"""A job's User for real, through the runtime (Launcher), in both user-namespace modes: the
job's processes run as that uid, gid and groups (names from the rootfs's own /etc/passwd, here
the node's busybox rootfs), hold no capability when not root, write what such a user may, and
a User that cannot be resolved fails the job with one line naming it, before it has a process.
Images with a User of their own: test_images_runtime.py. Runs in `make test-v2` too."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from lclusterd.runtime import caps
from lclusterd.runtime.spec import RunResult, RuntimeSpec


@pytest.fixture(autouse=True)
def nothing_leaks(runtime):
    yield
    assert runtime.leftovers() == []


def run(runtime, rootfs: str, tmp_path: Path, command: str, user: str, **kw) -> tuple[RunResult, str, str]:
    job_id = uuid.uuid4().hex
    out, err = tmp_path / f"{job_id}.out", tmp_path / f"{job_id}.err"
    spec = RuntimeSpec.shell(job_id, command, rootfs, user=user, stdout_path=str(out), stderr_path=str(err), **kw)
    result = runtime.launcher.run(spec, timeout=60)
    return result, out.read_text() if out.exists() else "", err.read_text() if err.exists() else ""


def capabilities(out: str) -> dict[str, int]:
    """`grep Cap /proc/self/status`, as {"CapEff": mask, ...}."""
    return {name.rstrip(":"): int(value, 16) for name, value in (line.split() for line in out.splitlines())}


def test_a_numeric_user_runs_the_job_and_owns_what_it_makes_in_tmp(runtime, rootfs, tmp_path):
    result, out, err = run(runtime, rootfs, tmp_path, "id -u; id -g; id -G; echo $HOME; touch /tmp/made; "
                           "stat -c '%u:%g %a' /tmp/made; stat -c '%u:%g' /tmp", "1000:1000")
    assert (result.status, result.exit_code, err) == ("EXITED", 0, ""), result
    # no passwd entry for 1000: HOME is / (runc's default), no supplementary group
    assert out.splitlines() == ["1000", "1000", "1000", "/", "1000:1000 644", "0:0"]


def test_a_uid_alone_without_an_entry_takes_gid_0_as_docker_does(runtime, rootfs, tmp_path):
    result, out, _ = run(runtime, rootfs, tmp_path, "id -u; id -g; id -G", "1000")
    assert (result.status, out.splitlines()) == ("EXITED", ["1000", "0", "0"])


def test_a_name_is_looked_up_in_the_rootfss_passwd(runtime, rootfs, tmp_path):
    result, out, _ = run(runtime, rootfs, tmp_path, "id -u; id -g; id -un; echo $HOME", "nobody")
    assert (result.status, out.splitlines()) == ("EXITED", ["65534", "65534", "nobody", "/nonexistent"])
    # the job's own HOME wins over its user's
    result, out, _ = run(runtime, rootfs, tmp_path, "echo $HOME", "nobody", env={"HOME": "/tmp"})
    assert out == "/tmp\n"


def test_a_user_other_than_root_holds_no_capability(runtime, rootfs, tmp_path):
    kept = caps.mask_of(caps.DEFAULT_KEEP)
    result, out, _ = run(runtime, rootfs, tmp_path, "grep Cap /proc/self/status", "1000:1000")
    assert result.status == "EXITED"
    # the bounding set stays the kept set (as Docker's); no_new_privs keeps anything from raising it
    assert capabilities(out) == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": kept, "CapAmb": 0}
    result, out, _ = run(runtime, rootfs, tmp_path, "grep Cap /proc/self/status", "0:1000")  # root by uid keeps them
    assert capabilities(out) == {"CapInh": kept, "CapPrm": kept, "CapEff": kept, "CapBnd": kept, "CapAmb": 0}


def test_a_user_other_than_root_cannot_do_what_root_can(runtime, rootfs, tmp_path):
    result, out, err = run(runtime, rootfs, tmp_path,
                           "touch /made || echo no-root-dir; echo x > /tmp/mine && echo tmp-ok; chown 0 /tmp/mine || "
                           "echo no-chown; cat /proc/1/environ >/dev/null && echo own-proc; "
                           "grep NoNewPrivs /proc/self/status", "1000:1000")
    assert result.status == "EXITED", result
    assert out.splitlines() == ["no-root-dir", "tmp-ok", "no-chown", "own-proc", "NoNewPrivs:\t1"]
    assert "Permission denied" in err and "Operation not permitted" in err


@pytest.mark.parametrize("user, error", [
    ("app", "user app: no such user in the image's /etc/passwd"),
    ("1000:staff", "user 1000:staff: no group 'staff' in the image's /etc/group"),
])
def test_a_user_the_rootfs_does_not_name_fails_the_job_with_one_line(runtime, rootfs, tmp_path, user, error):
    result, out, err = run(runtime, rootfs, tmp_path, "echo ran", user)
    assert (result.status, result.error, result.host_pid, out) == ("FAILED", error, None, "")


def test_ids_outside_the_jobs_user_namespace_are_refused(runtime, rootfs, tmp_path):
    result, out, _ = run(runtime, rootfs, tmp_path, "id -u; id -g", "70000:70001")
    if runtime.userns:
        assert (result.status, result.error) == (
            "FAILED", "user 70000:70001: uid 70000 is outside the job's user namespace (ids 0-65535)")
    else:  # the host's ids: any valid one
        assert (result.status, out) == ("EXITED", "70000\n70001\n")
