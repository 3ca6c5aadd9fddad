"""lclient's gRPC-free unary calls (lclient/wire.py, lclient/hpack.py) against a real gRPC
server in this process: replies, statuses with their messages and metadata, large replies,
deadlines, and the failures that must go back to gRPC's client (NotDelivered). HPACK
against RFC 7541's own examples."""

from __future__ import annotations

import socket
import os
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from lclient import errors, hpack, wire
from lclient.client import JobsClient, Target
from lclusterd.rpc import lclusterd_pb2 as pb
from lclusterd.rpc.metadata import ERROR_METADATA_KEY

ROOT = Path(__file__).resolve().parents[2]
KEY = ERROR_METADATA_KEY


# -- HPACK: RFC 7541 Appendix C ----------------------------------------------------------------
def test_integers_as_the_rfc_encodes_them():
    assert hpack.encode_int(10, 5) == bytes([0x0A])
    assert hpack.encode_int(1337, 5) == bytes([0x1F, 0x9A, 0x0A])
    assert hpack.encode_int(42, 8) == bytes([0x2A])


def test_requests_with_huffman_and_the_dynamic_table():
    decoder = hpack.Decoder()
    assert decoder.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff")) == [
        (":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
    decoder.decode(bytes.fromhex("828684be5886a8eb10649cbf"))
    third = decoder.decode(bytes.fromhex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"))
    assert third[-1] == ("custom-key", "custom-value")
    assert decoder.size == 164


def test_responses_evicting_from_a_small_table():
    """C.6: Huffman responses with the table limited to 256 bytes, so entries are evicted."""
    decoder = hpack.Decoder()
    decoder.table_size = 256
    blocks = ["488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
              "4883640effc1c0bf",
              "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007"]
    out = [decoder.decode(bytes.fromhex(b)) for b in blocks]
    assert out[0] == [(":status", "302"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                      ("location", "https://www.example.com")]
    assert out[1][0] == (":status", "307")
    assert ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1") in out[2]
    assert decoder.size == 215


def test_bad_header_blocks_are_errors_not_crashes():
    for block in (b"\xff", b"\x00\x85ab", b"\xbf\x01", b"\x00\x81\xff\x00"):
        with pytest.raises(hpack.HpackError):
            hpack.Decoder().decode(block)


def test_what_it_encodes_it_decodes():
    headers = [(":path", "/lclusterd.v1.Jobs/Check"), ("x-long", "v" * 300)]
    assert hpack.Decoder().decode(hpack.encode(headers)) == headers


# -- calls against a real gRPC server ---------------------------------------------------------
JOB = pb.Job(id="a" * 32, state="EXITED", exit_code=3, spec=pb.JobSpec(command="echo ünïcode"))


def check(request: pb.JobRef, context: grpc.ServicerContext) -> pb.Job:
    if request.id == "missing":
        context.set_trailing_metadata(((KEY, "NotFound"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no job with uuid missing: 100% gone, ünïcode\nline")
    if request.id == "bare":
        context.abort(grpc.StatusCode.UNAVAILABLE, "not ours")
    if request.id == "slow":
        time.sleep(2)
    return JOB


def list_jobs(request: pb.ListRequest, context: grpc.ServicerContext) -> pb.ListReply:
    return pb.ListReply(jobs=[pb.Job(id=f"{i:032x}", state="EXITED", spec=pb.JobSpec(command="x" * 100))
                              for i in range(request.limit)])


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    handlers = grpc.method_handlers_generic_handler("lclusterd.v1.Jobs", {
        "Check": grpc.unary_unary_rpc_method_handler(check, pb.JobRef.FromString, pb.Job.SerializeToString),
        "List": grpc.unary_unary_rpc_method_handler(list_jobs, pb.ListRequest.FromString, pb.ListReply.SerializeToString),
    })
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    path = tmp_path_factory.mktemp("wire") / "s.sock"
    server.add_insecure_port(f"unix:{path}")
    server.start()
    yield {"tcp": f"127.0.0.1:{port}", "unix": f"unix:{path}"}
    server.stop(None)


def call(server: str, method: str, request, timeout: float | None = 10) -> wire.Reply:
    return wire.unary(server, f"/lclusterd.v1.Jobs/{method}", request.SerializeToString(), timeout, KEY)


@pytest.mark.parametrize("way", ["tcp", "unix"])
def test_a_reply_arrives_whole(servers, way):
    reply = call(servers[way], "Check", pb.JobRef(id="a" * 32))
    assert (reply.code, reply.ours) == ("OK", False)
    assert pb.Job.FromString(reply.body) == JOB


def test_a_status_with_its_message_and_our_key(servers):
    reply = call(servers["tcp"], "Check", pb.JobRef(id="missing"))
    assert (reply.code, reply.ours) == ("NOT_FOUND", True)
    assert reply.details == "no job with uuid missing: 100% gone, ünïcode\nline"
    bare = call(servers["tcp"], "Check", pb.JobRef(id="bare"))
    assert (bare.code, bare.details, bare.ours) == ("UNAVAILABLE", "not ours", False)


def test_a_reply_larger_than_every_default_window(servers):
    """~1.5 MB: many DATA frames, past HTTP/2's 64 KiB initial windows (ours are opened wide)."""
    reply = call(servers["unix"], "List", pb.ListRequest(limit=10000))
    assert reply.code == "OK"
    jobs = pb.ListReply.FromString(reply.body).jobs
    assert len(jobs) == 10000 and jobs[-1].id == f"{9999:032x}"


def test_the_deadline_ends_the_call(servers):
    reply = call(servers["tcp"], "Check", pb.JobRef(id="slow"), timeout=0.3)
    assert (reply.code, reply.ours) == ("DEADLINE_EXCEEDED", False)


def test_an_unknown_method_is_the_servers_status(servers):
    assert call(servers["tcp"], "Nope", pb.JobRef()).code == "UNIMPLEMENTED"


def one_off_server(answer: bytes) -> tuple[str, threading.Thread]:
    """A TCP listener that takes one connection, sends `answer` and closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"127.0.0.1:{listener.getsockname()[1]}", thread


@pytest.mark.parametrize("answer", [b"", b"\x15\x03\x03\x00\x02\x02\x28", b"HTTP/1.1 400 Bad Request\r\n\r\n"],
                         ids=["closed", "tls-alert", "http1"])
def test_a_peer_that_never_spoke_http2_has_not_had_the_request(answer):
    server, thread = one_off_server(answer)
    with pytest.raises(wire.NotDelivered):
        call(server, "Check", pb.JobRef(id="a" * 32))
    thread.join(10)


def test_no_listener_is_not_delivered(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for server in (f"127.0.0.1:{port}", f"unix:{tmp_path / 'none.sock'}", "no-port"):
        with pytest.raises(wire.NotDelivered):
            call(server, "Check", pb.JobRef(id="a" * 32))


def test_the_one_shot_client_falls_back_to_grpc_and_its_words():
    """A refused connection goes through gRPC's client, which says it as lclient always has."""
    server, thread = one_off_server(b"")
    with JobsClient(Target(server), timeout=5, one_shot=True) as client:
        with pytest.raises(errors.ServerUnreachable, match=f"cannot reach lclusterd at {server}"):
            client.check("a" * 32)


def test_the_one_shot_client_maps_statuses_as_grpc_does(servers):
    with JobsClient(Target(servers["tcp"]), one_shot=True) as fast, JobsClient(Target(servers["tcp"])) as slow:
        assert fast.check("a" * 32) == slow.check("a" * 32) == JOB
        for client in (fast, slow):
            with pytest.raises(errors.NotFound) as found:
                client.check("missing")
            assert str(found.value) == "no job with uuid missing: 100% gone, ünïcode\nline"
            with pytest.raises(errors.ServerUnreachable, match="cannot reach lclusterd"):
                client.check("bare")
        assert fast._channel is None  # every call went without gRPC


def test_lclient_checks_a_job_without_importing_grpc(servers):
    code = ("import sys\nfrom lclient.cli import run\n"
            f"assert run(['-server', {servers['unix']!r}, '-check', 'a' * 32]) == 0\n"
            "print('grpc modules:', [m for m in sys.modules if m.startswith('grpc')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "state:    EXITED (exit code 3)" in out.stdout
    assert out.stdout.splitlines()[-1] == "grpc modules: []"


def test_the_launchers_plain_check_imports_neither_grpc_nor_click(servers, tmp_path):
    """The command on PATH, run as its shebang runs it: a plain -check goes over the wire
    without gRPC, and without click or inspect (what dataclasses imports), a third of the
    start-up they would cost (README "lclient's start-up")."""
    sys.path.insert(0, str(ROOT / "tools"))
    import launcher

    launcher.write_launcher(tmp_path / "lclient")
    result = subprocess.run([sys.executable, "-IS", "-X", "importtime", str(tmp_path / "lclient"), "-check", "a" * 32],
                            capture_output=True, text=True, env={**os.environ, "LCLUSTER_SERVER": servers["unix"]})
    assert result.returncode == 0, result.stderr
    assert "state:    EXITED (exit code 3)" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "lclient.actions" in imported and "lclusterd.rpc.lclusterd_pb2" in imported
    assert sorted(m for m in imported if m.split(".")[0] in ("grpc", "click", "inspect", "dataclasses")) == []
