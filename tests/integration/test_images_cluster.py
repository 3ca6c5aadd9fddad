"""Images through the control plane, with real daemons on one real etcd and the real lclient:
images imported (an OCI layout made by umoci and its `docker save` twin made by skopeo) into
a running node's store with `lclusterd image`, published by the node without a restart, a
job's defaults from its image's config (Env, WorkingDir, Cmd for an empty command; its own
options win), placement only on the node that has the image, an image no node has refused
at add with one line (exit 1), a removed image refused for new jobs and named in the
`waiting` of a queued one, `lclient -images`; and the image `debian` (make rootfs
ROOTFS=debian) running python3 and compiling a C program that reads its stdin, under a
timeout; a job whose image its node cannot use at the start (damaged there) FAILED with
the reason; and a job as its image's User, one whose User the image does not name FAILED with
one line naming it; `-run-as` for one job, on the rootfs or over an image's User."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from support.images import docker_archive, run_image_cli, umoci_image, umoci_users_image
from support.jobs import add, check, ran_on, until

SYSTEM_STORE = Path("/var/lib/lclusterd/images")  # where `make rootfs ROOTFS=debian` puts debian


@pytest.fixture(scope="module")
def oci_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return umoci_image(tmp_path_factory.mktemp("umoci"))


def import_image(node, name: str, path: Path, *more: str) -> None:
    code, _, err = run_image_cli("import", "--state-dir", str(node.state_dir), name, str(path), *more)
    assert code == 0, err


def images(node) -> set[tuple[str, str]]:
    result = node.lclient("-images", "-json")
    assert result.returncode == 0, result.stderr
    return {(d["node"], d["image"]) for d in map(json.loads, result.stdout.splitlines())}


def follow(node, *args: str) -> subprocess.CompletedProcess:
    """`lclient -add ARGS -follow`: the job's output, and its exit status."""
    return node.lclient("-add", *args, "-follow", timeout=300)


def test_a_job_takes_its_images_defaults_and_runs_only_where_the_image_is(cluster, oci_layout, tmp_path):
    a = cluster.daemon("a", extra=["--capacity", "4"])
    b = cluster.daemon("b", extra=["--capacity", "4"])
    until(lambda: images(a) == {("a", "busybox"), ("b", "busybox")}, "both nodes to publish their rootfs")

    import_image(a, "tiny", oci_layout)  # into a running node: it notices without a restart
    import_image(b, "tiny-docker", docker_archive(oci_layout, tmp_path / "tiny-docker.tar"))
    until(lambda: images(b) == {("a", "busybox"), ("a", "tiny"), ("b", "busybox"), ("b", "tiny-docker")},
          "both imports to be published")
    table = b.lclient("-images").stdout.splitlines()
    assert [line.split() for line in table] == [["NODE", "IMAGE"], ["a", "busybox"], ["a", "tiny"], ["b", "busybox"],
                                                ["b", "tiny-docker"]]

    # the image's Cmd for an empty command; its Env and WorkingDir; the job's -env wins
    done = follow(b, "", "-image", "tiny")
    assert (done.returncode, done.stdout) == (0, "image default command\n"), done.stderr
    done = follow(b, 'echo "$GREETING|$MINE|$(pwd)"', "-image", "tiny", "-env", "MINE=mine")
    assert (done.returncode, done.stdout) == (0, "from the image|mine|/home/user\n"), done.stderr
    done = follow(a, 'echo "$GREETING"', "-image", "tiny-docker", "-env", "GREETING=the job's")
    assert (done.returncode, done.stdout) == (0, "the job's\n"), done.stderr
    done = follow(b, "pwd", "-image", "tiny", "-workdir", "/d")  # the job's -workdir over the image's WorkingDir
    assert (done.returncode, done.stdout) == (0, "/d\n"), done.stderr
    job = check(a, add(a, "", "-image", "tiny", "-wait"))
    assert (job["image"], job["command"], job["node"], job["state"]) == ("tiny", "", "a", "EXITED")
    assert ["image:", "tiny"] in [line.split() for line in a.lclient("-check", job["id"]).stdout.splitlines()]

    # placement: every job of an image on the one node that has it, whoever takes the add
    jobs = [add(node, "true", "-image", "tiny") for node in (a, b, b, a, b)]
    until(lambda: all(check(a, j)["state"] == "EXITED" for j in jobs), "the image's jobs to end")
    assert {check(b, j)["node"] for j in jobs} == {"a"}
    assert all(ran_on(cluster.daemons, j) == {"a"} for j in jobs)
    docker_jobs = [add(node, "true", "-image", "tiny-docker") for node in (a, b)]
    until(lambda: all(check(a, j)["state"] == "EXITED" for j in docker_jobs), "the docker image's jobs to end")
    assert {check(a, j)["node"] for j in docker_jobs} == {"b"}
    pool = add(b, "echo pooled", "-image", "tiny", "-all-nodes")  # a member on each ready node with the image
    assert b.lclient("-wait", pool, timeout=120).returncode == 0
    assert [(m["node"], m["image"]) for m in check(b, pool)["members"]] == [("a", "tiny")]

    # refused at add, one line, exit 1: an image no node has, a pin to a node without it
    for node in (a, b):
        refused = node.lclient("-add", "true", "-image", "nosuch")
        assert (refused.returncode, refused.stdout, refused.stderr) == (
            1, "", "lclient: no node has the image 'nosuch' (lclusterd image import nosuch PATH on a node)\n")
    refused = a.lclient("-add", "true", "-image", "tiny", "-node", "b")
    assert (refused.returncode, refused.stderr) == (
        1, "lclient: node b does not have the image 'tiny' (lclusterd image import tiny PATH on a node)\n")
    for argv, line in ((["-add", ""], "lclient: empty command\n"),
                       (["-add", "", "-image", "busybox"], "lclient: empty command, and the image 'busybox' has no "
                                                          "Entrypoint or Cmd to run instead\n"),
                       (["-add", "true", "-image", "No/Such"], "lclient: invalid image name 'No/Such': 1 to 63 of a-z, "
                                                              "0-9, '.', '_', '-', starting with a letter or digit\n")):
        refused = a.lclient(*argv)
        assert (refused.returncode, refused.stderr) == (2, line)
    assert "-image goes with -add" in a.lclient("-list", "-image", "tiny").stderr


def test_removing_an_image_refuses_new_jobs_and_says_why_a_queued_one_waits(cluster, oci_layout):
    a = cluster.daemon("a", extra=["--capacity", "1"])
    b = cluster.daemon("b", extra=["--capacity", "1"])
    import_image(a, "tiny", oci_layout)
    until(lambda: ("a", "tiny") in images(b), "a to publish tiny")
    busy = add(b, "sleep 300", "-node", "a")  # a's one slot, on its rootfs (not the image's tree)
    until(lambda: check(a, busy)["state"] == "RUNNING", "a's slot to be taken")
    queued = add(b, "echo ran", "-image", "tiny")
    assert check(b, queued)["state"] == "QUEUED"

    code, _, err = run_image_cli("rm", "--state-dir", str(a.state_dir), "tiny")
    assert code == 0, err
    until(lambda: ("a", "tiny") not in images(b), "a to stop publishing tiny")
    waiting = until(lambda: check(b, queued)["waiting"], "the queued job's note")
    assert waiting == "no ready node has the image 'tiny' (lclusterd image import tiny PATH on a node)"
    refused = b.lclient("-add", "true", "-image", "tiny")
    assert (refused.returncode, refused.stderr) == (
        1, "lclient: no node has the image 'tiny' (lclusterd image import tiny PATH on a node)\n")

    import_image(b, "tiny", oci_layout)  # the image comes back on another node: the queued job runs there
    done = b.lclient("-wait", queued, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (check(a, queued)["node"], b.lclient("-logs", queued).stdout) == ("b", "ran\n")
    assert a.lclient("-kill", busy).returncode == 0


def test_an_image_its_node_cannot_use_at_the_start_fails_the_job_with_the_reason(cluster, oci_layout):
    a = cluster.daemon("a")
    import_image(a, "tiny", oci_layout)
    until(lambda: ("a", "tiny") in images(a), "a to publish tiny")
    # damaged in place after the node published it (the store's directory does not change)
    (a.state_dir / "images" / "tiny" / "config.json").write_text("{not json")
    done = a.lclient("-add", "true", "-image", "tiny", "-wait", timeout=120)
    job = check(a, done.stdout.strip())
    assert (done.returncode, job["state"], job["node"]) == (1, "FAILED", "a")
    assert job["error"].startswith("node a cannot run the job's image: malformed image config: not JSON")
    assert done.stderr.count("\n") == 1 and "cannot run the job's image" in done.stderr


def test_a_job_runs_as_its_images_user_and_one_the_image_does_not_name_fails_with_one_line(cluster, tmp_path):
    outside = tmp_path / "host-passwd"
    outside.write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    layout = umoci_users_image(tmp_path, outside)
    a = cluster.daemon("a")
    for tag in ("app", "nosuch"):
        import_image(a, tag, layout, "--ref", tag)
    until(lambda: {("a", "app"), ("a", "nosuch")} <= images(a), "a to publish both images")
    done = follow(a, "id -un; id -G; echo $HOME", "-image", "app")
    assert (done.returncode, done.stdout) == (0, "app\n1235 2000\n/home/app\n"), done.stderr
    done = a.lclient("-add", "echo ran", "-image", "nosuch", "-wait", timeout=120)
    job = check(a, done.stdout.strip())
    assert (done.returncode, job["state"], job["error"]) == (1, "FAILED",
                                                           "user nosuch: no such user in the image's /etc/passwd")
    assert done.stderr == f"lclient: job {job['id']} ended FAILED: user nosuch: no such user in the image's /etc/passwd\n"



def test_run_as_names_the_user_of_one_job_on_the_rootfs_or_over_its_images(cluster, tmp_path):
    a = cluster.daemon("a")
    # busybox's own /etc/passwd: nobody is 65534, and holds no capability (no write to /etc)
    done = follow(a, "id -u; id -g; echo $HOME; touch /etc/x", "-run-as", "nobody")
    assert (done.returncode, done.stdout) == (1, "65534\n65534\n/nonexistent\n"), done.stderr
    assert "Permission denied" in done.stderr
    done = follow(a, "id -u; id -g; id -G", "-run-as", "1234:5678")  # numbers need no entry
    assert (done.returncode, done.stdout) == (0, "1234\n5678\n5678\n"), done.stderr
    job = check(a, add(a, "true", "-run-as", "nobody:nogroup"))
    assert job["run_as"] == "nobody:nogroup"
    assert "runs as:     nobody:nogroup\n" in a.lclient("-check", job["id"]).stdout
    # over an image's User: -run-as wins
    outside = tmp_path / "host-passwd"
    outside.write_text("hostonly:x:4242:4242::/:/bin/sh\n")
    import_image(a, "app", umoci_users_image(tmp_path, outside), "--ref", "app")
    until(lambda: ("a", "app") in images(a), "a to publish the image")
    assert follow(a, "id -un", "-image", "app", "-run-as", "root").stdout == "root\n"
    # a name the job's root lacks (the host's own users are not the job's): FAILED, one line
    done = a.lclient("-add", "echo ran", "-run-as", "hostonly", "-wait", timeout=120)
    job = check(a, done.stdout.strip())
    assert (done.returncode, job["state"], job["error"]) == (1, "FAILED",
                                                           "user hostonly: no such user in the image's /etc/passwd")
    # a malformed one is refused before anything is queued, by lclient and by the API
    listed = lambda: a.lclient("-list", "-json").stdout.count("\n")  # noqa: E731
    before = listed()
    for bad in ("a:b:c", ":5", "1:99999999999"):
        refused = a.lclient("-add", "true", "-run-as", bad)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith("lclient: user ") and bad in refused.stderr, refused.stderr
    assert a.lclient("-check", "-run-as", "nobody", "0" * 32).returncode == 2  # -run-as goes with -add
    assert listed() == before


SUM_C = r"""
#include <stdio.h>
int main(void) {
    long total = 0, n;
    while (scanf("%ld", &n) == 1) total += n;
    printf("sum %ld\n", total);
    return 0;
}
"""


def test_debian_runs_python_and_compiles_a_c_program_that_reads_its_stdin(cluster, tmp_path):
    system = SYSTEM_STORE / "debian"
    assert (system / "image.json").is_file(), "no image debian on this host: make rootfs ROOTFS=debian (make test does)"
    a = cluster.daemon("a")
    store = a.state_dir / "images"
    store.mkdir(mode=0o700, exist_ok=True)
    # hard links: the node's store gets the image in seconds, and jobs only read their lower layer;
    # made beside it and renamed into place whole, as an import is
    if subprocess.run(["cp", "-al", str(system), str(store / ".tmp-debian")]).returncode != 0:
        shutil.rmtree(store / ".tmp-debian", ignore_errors=True)  # another filesystem: a copy, slower
        subprocess.run(["cp", "-a", str(system), str(store / ".tmp-debian")], check=True)
    (store / ".tmp-debian").rename(store / "debian")
    try:
        until(lambda: ("a", "debian") in images(a), "a to publish debian")
        done = follow(a, "python3 -c 'import sys; print(sys.version_info[0], sum(range(10)))'", "-image", "debian",
                      "-timeout", "120s")
        assert (done.returncode, done.stdout) == (0, "3 45\n"), done.stderr

        numbers = tmp_path / "numbers"
        numbers.write_text("1 2 3\n4 5\n")
        done = follow(a, 'printf "%s" "$SRC" > /tmp/sum.c && gcc -O2 -o /tmp/sum /tmp/sum.c && /tmp/sum', "-image",
                      "debian", "-env", f"SRC={SUM_C}", "-stdin", str(numbers), "-timeout", "300s")
        assert (done.returncode, done.stdout) == (0, "sum 15\n"), done.stderr

        slow = a.lclient("-add", "python3 -c 'import time; time.sleep(600)'", "-image", "debian", "-timeout", "2s",
                         "-wait", timeout=120)
        assert slow.returncode == 124, slow.stderr
        assert check(a, slow.stdout.strip())["state"] == "TIMED_OUT"
    finally:
        a.stop()
        shutil.rmtree(store / "debian", ignore_errors=True)
