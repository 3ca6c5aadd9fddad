"""The web page's login and its JSON API (docs/web.md) against real nodes, with urllib: every
endpoint, every error status, the same identities as the gRPC API (real local users on the
node's socket), and tokens that are bad, expired, forged or someone else's refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from support.host import ROOTFS, remove_cgroup_parent
from support.jobs import add, check, until
from support.processes import LCLUSTERD, Cluster, free_port
from support.users import as_user, make_user, remove_user
from support.web import csrf_of, http, session_cookie, web_login

TAG = uuid.uuid4().hex[:5]  # other runs may share this host: names of our own
ANN, BOB = f"lcw-ann{TAG}", f"lcw-bob{TAG}"


@pytest.fixture(scope="module")
def users():
    made = [make_user(ANN, True), make_user(BOB, True)]
    yield made
    for name in made:
        remove_user(name)


@pytest.fixture(scope="module")
def place() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="lclusterd-web-", dir="/var/tmp"))
    os.chmod(directory, 0o711)  # the users reach the node's socket in it
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def node(module_etcd, place, users):
    cluster = Cluster(place, module_etcd)
    name = f"web-{TAG}"
    (place / name).mkdir(mode=0o711)
    daemon = cluster.daemon(name, extra=["--web-listen", f"127.0.0.1:{free_port()}"], directory=place / name)
    yield daemon
    cluster.close()


@pytest.fixture(scope="module")
def admin(node) -> str:
    """root over --insecure TCP is an admin: a session token for it."""
    return web_login(node)["token"]


def user_login(node, user: str) -> dict:
    result = as_user(user, "-web", "-json", server=node.socket)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def api(node, path: str) -> str:
    return node.web_url + "/api" + path


def error(answer, status: int, *words: str) -> str:
    """The answer is `status` with one line of JSON error holding `words`."""
    assert answer.status == status, (answer.status, answer.body)
    line = answer.json["error"]
    assert list(answer.json) == ["error"] and "\n" not in line and line, answer.json
    for word in words:
        assert word in line, line
    return line


def test_a_login_link_sets_a_strict_httponly_session_cookie_once(node):
    login = web_login(node)
    assert login["user"] == "root" and login["admin"] is True
    assert login["url"].startswith(node.web_url + "/login?token=")
    first = http("GET", login["url"])
    assert (first.status, first.headers["Location"]) == (303, "/")
    (cookie,) = first.cookies()
    assert cookie.startswith(f"lclusterd-{node.name}=")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {part.strip() for part in cookie.split(";")}
    assert first.headers["Referrer-Policy"] == "no-referrer"
    page = http("GET", node.web_url + "/", cookie=cookie.split(";")[0])
    assert page.status == 200 and "root (admin)" in page.text and "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    again = http("GET", login["url"])
    assert again.status == 401 and "used already" in again.text
    assert http("GET", node.web_url + "/login?token=" + login["token"]).status == 401  # a session token is no link


def test_the_api_answers_as_lclient_json_does(node, admin):
    job = add(node, "echo out; echo err >&2")
    assert node.lclient("-wait", job).returncode == 0
    assert http("GET", api(node, f"/jobs/{job}"), token=admin).json == check(node, job)

    nodes = http("GET", api(node, "/nodes"), token=admin).json["nodes"]
    assert node.name in [n["name"] for n in nodes]
    cli = {json.loads(line)["name"]: json.loads(line) for line in node.lclient("-nodes", "-json").stdout.splitlines()}
    assert {n["name"]: n["capacity"] for n in nodes} == {name: n["capacity"] for name, n in cli.items()}

    logs = http("GET", api(node, f"/jobs/{job}/logs"), token=admin).json
    assert logs == {"stdout": "out\n", "stderr": "err\n", "offsets": {"stdout": 4, "stderr": 4}, "more": False,
                    "state": "EXITED", "ended": True}
    later = http("GET", api(node, f"/jobs/{job}/logs?stdout_offset=2&stderr_offset=4"), token=admin).json
    assert (later["stdout"], later["stderr"], later["offsets"]) == ("t\n", "", {"stdout": 4, "stderr": 4})


def test_submit_list_and_kill_through_the_api(node, admin):
    body = {"command": "sleep 300", "mem": "64M", "cpus": 0.5, "pids": 32, "timeout": "10m", "env": {"A": "1"}, "retries": 1}
    added = http("POST", api(node, "/jobs"), token=admin, body=body)
    assert added.status == 201, added.body
    job = added.json
    assert (job["command"], job["owner"], job["retries"]) == ("sleep 300", "root", 1)
    assert job["limits"] == {"memory_bytes": 64 << 20, "cpus": 0.5, "pids": 32, "timeout_seconds": 600.0}
    until(lambda: check(node, job["id"])["state"] == "RUNNING", "the job to run")

    done = add(node, "true")
    node.lclient("-wait", done)
    listed = http("GET", api(node, "/jobs?limit=2"), token=admin).json["jobs"]
    assert [j["id"] for j in listed] == [done, job["id"]]  # newest first
    running = http("GET", api(node, "/jobs?state=running&owner=root"), token=admin).json["jobs"]
    assert job["id"] in [j["id"] for j in running] and {j["state"] for j in running} == {"RUNNING"}
    assert http("GET", api(node, "/jobs?owner=nobody-at-all"), token=admin).json == {"jobs": []}

    killed = http("POST", api(node, f"/jobs/{job['id']}/kill"), token=admin)
    assert killed.status == 200 and killed.json["kill_requested"] is True
    node.lclient("-wait", job["id"])
    assert check(node, job["id"])["state"] == "KILLED"


def test_the_api_takes_an_image_a_workdir_a_network_and_a_user_as_lclient_add_does(node, admin):
    body = {"command": "pwd; ls /", "image": "busybox", "workdir": "/srv/work", "net": "none", "volumes": [], "publish": ""}
    added = http("POST", api(node, "/jobs"), token=admin, body=body)
    assert added.status == 201, added.body
    job = added.json
    assert (job["image"], job["workdir"], job["net"], job["publish"], job["volumes"]) == ("busybox", "/srv/work", "none", [], [])
    node.lclient("-wait", job["id"])
    logs = node.lclient("-logs", job["id"])
    assert logs.stdout.startswith("/srv/work\n") and "bin" in logs.stdout.split(), logs
    # the same checks as lclient's, at add: a port without a network, an image no node has, a volume's bad form
    error(http("POST", api(node, "/jobs"), token=admin, body={"command": "true", "publish": ["8080:80"]}), 400,
          "publishing a port needs net=bridge")
    error(http("POST", api(node, "/jobs"), token=admin, body={"command": "true", "image": "nosuch"}), 409,
          "no node has the image 'nosuch'")
    error(http("POST", api(node, "/jobs"), token=admin, body={"command": "true", "volumes": "relative:/x"}), 400, "volume")
    error(http("POST", api(node, "/jobs"), token=admin, body={"command": "true", "net": "bridge"}), 400, "no node offers -net bridge")
    # and the user it runs as (-run-as)
    added = http("POST", api(node, "/jobs"), token=admin, body={"command": "id -u", "run_as": "nobody"})
    assert added.status == 201 and added.json["run_as"] == "nobody", added.body
    node.lclient("-wait", added.json["id"])
    assert node.lclient("-logs", added.json["id"]).stdout == "65534\n"
    error(http("POST", api(node, "/jobs"), token=admin, body={"command": "true", "run_as": "a:b:c"}), 400, "user 'a:b:c'")


def test_every_error_is_its_status_and_one_line_of_json(node, admin):
    finished = add(node, "true")
    node.lclient("-wait", finished)
    missing = uuid.uuid4().hex
    error(http("GET", api(node, "/jobs/not-a-uuid"), token=admin), 400, "malformed uuid")
    error(http("GET", api(node, "/jobs?limit=x"), token=admin), 400, "bad limit value 'x'")
    error(http("GET", api(node, "/jobs?state=SLEEPING"), token=admin), 400, "unknown state 'SLEEPING'")
    error(http("GET", api(node, f"/jobs/{finished}/logs?stdout_offset=-1"), token=admin), 400, "must not be negative")
    error(http("POST", api(node, "/jobs"), token=admin, body={"command": " "}), 400, "empty command")
    error(http("POST", api(node, "/jobs"), token=admin, body={"command": "true", "mem": "lots"}), 400, "bad mem value 'lots'")
    error(http("POST", api(node, "/jobs"), token=admin, body={"command": "true", "color": "red"}), 400, "unknown field 'color'")
    error(http("POST", api(node, "/jobs"), token=admin, body=b"{not json", headers={"Content-Type": "application/json"}),
          400, "not JSON")
    error(http("GET", api(node, "/jobs")), 401, "not logged in", "lclient -web")
    error(http("GET", api(node, "/jobs"), headers={"Authorization": "Basic cm9vdDp4"}), 401, "Bearer TOKEN")
    error(http("GET", api(node, f"/jobs/{missing}"), token=admin), 404, f"no job with uuid {missing}")
    error(http("POST", api(node, f"/jobs/{missing}/kill"), token=admin), 404, "no job with uuid")
    error(http("GET", api(node, "/nothing-here"), token=admin), 404, "Not Found")
    error(http("POST", api(node, f"/jobs/{finished}/kill"), token=admin), 409, f"job {finished} has already finished (EXITED)")
    error(http("DELETE", api(node, f"/jobs/{finished}"), token=admin), 405, "Method Not Allowed")


def test_users_see_and_kill_only_their_own_jobs(node, admin):
    ann, bob = user_login(node, ANN), user_login(node, BOB)
    assert (ann["user"], ann["admin"]) == (ANN, False)
    result = as_user(ANN, "-add", "sleep 300", server=node.socket)
    assert result.returncode == 0, result.stderr
    job = result.stdout.strip()
    theirs = http("POST", api(node, "/jobs"), token=bob["token"], body={"command": "true"}).json["id"]

    assert http("GET", api(node, f"/jobs/{job}"), token=ann["token"]).json["owner"] == ANN
    error(http("GET", api(node, f"/jobs/{job}"), token=bob["token"]), 403, f"user {BOB} may not see {job}", f"{ANN}'s job")
    error(http("GET", api(node, f"/jobs/{job}/logs"), token=bob["token"]), 403, f"user {BOB} may not see {job}")
    error(http("POST", api(node, f"/jobs/{job}/kill"), token=bob["token"]), 403, f"user {BOB} may not kill {job}")
    error(http("GET", api(node, f"/jobs?owner={ANN}"), token=bob["token"]), 403, f"may not list {ANN}'s jobs")
    bobs = http("GET", api(node, "/jobs"), token=bob["token"]).json["jobs"]
    assert [j["id"] for j in bobs] == [theirs]  # his own, nothing else
    everyone = [j["id"] for j in http("GET", api(node, "/jobs?limit=1000"), token=admin).json["jobs"]]
    assert {job, theirs} <= set(everyone)

    cookie = session_cookie(node, bob["url"])  # and through the page: the same refusal
    page = http("GET", f"{node.web_url}/jobs/{job}", cookie=cookie)
    assert page.status == 403 and f"user {BOB} may not see {job}" in page.text
    assert job not in http("GET", node.web_url + "/", cookie=cookie).text

    assert http("POST", api(node, f"/jobs/{job}/kill"), token=ann["token"]).status == 200
    node.lclient("-wait", job)
    assert check(node, job)["state"] == "KILLED"


def test_a_form_post_needs_the_sessions_csrf_token(node):
    cookie = session_cookie(node, web_login(node)["url"])
    job = add(node, "sleep 300")
    page = http("GET", f"{node.web_url}/jobs/{job}", cookie=cookie)
    csrf = csrf_of(page.text)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    kill = f"{node.web_url}/jobs/{job}/kill"
    assert http("POST", kill, cookie=cookie, body=b"", headers=form).status == 403
    other = csrf_of(http("GET", node.web_url + "/", cookie=session_cookie(node, web_login(node)["url"])).text)
    refused = http("POST", kill, cookie=cookie, body=f"csrf={other}".encode(), headers=form)
    assert refused.status == 403 and "CSRF" in refused.text
    assert http("POST", api(node, f"/jobs/{job}/kill"), cookie=cookie).status == 403  # the API too, by cookie
    done = http("POST", kill, cookie=cookie, body=f"csrf={csrf}".encode(), headers=form)
    assert (done.status, done.headers["Location"]) == (303, f"/jobs/{job}")
    node.lclient("-wait", job)
    assert check(node, job)["state"] == "KILLED"


def forge(claims: dict, key: bytes) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()).rstrip(b"=").decode()
    signature = hmac.new(key, b"lclusterd-web-v1." + body.encode(), hashlib.sha256).digest()
    return body + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def test_bad_expired_forged_and_foreign_tokens_are_refused(node, admin):
    key = (node.state_dir / "web.key").read_bytes()
    assert (node.state_dir / "web.key").stat().st_mode & 0o777 == 0o600
    now = int(time.time())
    fresh = {"u": ANN, "a": False, "k": "session", "e": now + 600, "i": "x" * 24}
    assert http("GET", api(node, "/nodes"), token=forge(fresh, key)).status == 200  # the format, as the node signs it
    error(http("GET", api(node, "/nodes"), token="garbage"), 401, "malformed")
    error(http("GET", api(node, "/nodes"), token=forge({**fresh, "e": now - 5}, key)), 401, "expired")
    error(http("GET", api(node, "/nodes"), token=forge(fresh, os.urandom(32))), 401, "not signed by this node")
    ann = user_login(node, ANN)["token"]
    body, signature = ann.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    promoted = base64.urlsafe_b64encode(json.dumps({**claims, "a": True}).encode()).rstrip(b"=").decode()
    error(http("GET", api(node, "/nodes"), token=f"{promoted}.{signature}"), 401, "not signed by this node")
    login_token = web_login(node)["url"].split("token=")[1]
    error(http("GET", api(node, "/nodes"), token=login_token), 401, "login link")
    error(http("GET", api(node, "/nodes"), cookie=f"lclusterd-{node.name}={forge(fresh, os.urandom(32))}"), 401)


def test_a_token_of_another_node_and_a_node_without_a_web_page(node, module_etcd, place, admin):
    cluster = Cluster(place / "second", module_etcd)
    try:
        other = cluster.daemon(f"webb-{TAG}", extra=["--web-listen", f"127.0.0.1:{free_port()}"])
        error(http("GET", api(other, "/nodes"), token=admin), 401, "not signed by this node")
        assert http("GET", api(other, "/nodes"), token=web_login(other)["token"]).status == 200
        plain = cluster.daemon(f"webc-{TAG}")  # --web-listen "" (the tests' default)
        result = plain.lclient("-web")
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == f"lclient: node webc-{TAG} serves no web page (start it with --web-listen HOST:PORT)\n"
    finally:
        cluster.close()


def test_a_web_port_in_use_fails_the_start_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([LCLUSTERD, "--state-dir", str(tmp_path / "state"), "--node-name", f"webd-{TAG}",
                                 "--rootfs", ROOTFS, "--web-listen", f"127.0.0.1:{port}", "--etcd", "http://127.0.0.1:9"],
                                capture_output=True, text=True, timeout=120)
    remove_cgroup_parent(f"webd-{TAG}")
    assert result.returncode == 3, result.stderr
    assert f"cannot listen on http://127.0.0.1:{port} for the web page: the port is in use" in result.stderr


def test_etcd_down_is_503(cluster, etcd):
    daemon = cluster.daemon(f"webe-{TAG}", extra=["--web-listen", f"127.0.0.1:{free_port()}", "--etcd-timeout", "1"])
    token = web_login(daemon)["token"]
    etcd.stop()
    try:
        error(http("GET", api(daemon, "/jobs"), token=token), 503, "etcd", "unavailable")
        error(http("POST", api(daemon, "/jobs"), token=token, body={"command": "true"}), 503, "unavailable")
    finally:
        etcd.start()  # the node stops cleanly on a live etcd
