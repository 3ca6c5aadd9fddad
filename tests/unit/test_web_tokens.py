"""Web tokens (api/tokens.py) and the page's form parsing (web/forms.py), as data: no node."""

from __future__ import annotations

import os

import pytest

from lclusterd.api.identity import Identity
from lclusterd.api.tokens import LOGIN, LOGIN_SECONDS, SESSION, SESSION_SECONDS, Tokens, load_key
from lclusterd.config import Config, ConfigError
from lclusterd.errors import InvalidSpec, NotAuthenticated
from lclusterd.web.calls import _whole_characters
from lclusterd.web.forms import spec_from

ANN = Identity("ann")


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def refused(tokens: Tokens, token: str, kind: str, words: str) -> None:
    with pytest.raises(NotAuthenticated, match=words):
        tokens.check(token, kind)


def test_a_session_token_stands_for_its_identity_until_it_expires():
    clock = Clock()
    tokens = Tokens(os.urandom(32), clock)
    issued = tokens.issue(Identity("boss", admin=True))
    assert (issued.login_expires_at, issued.expires_at) == (clock.now + LOGIN_SECONDS, clock.now + SESSION_SECONDS)
    claims = tokens.check(issued.session, SESSION)
    assert claims.identity == Identity("boss", admin=True)
    clock.now += SESSION_SECONDS
    refused(tokens, issued.session, SESSION, "expired")


def test_tokens_of_another_key_another_kind_or_altered_are_refused():
    tokens, other = Tokens(os.urandom(32)), Tokens(os.urandom(32))
    issued = tokens.issue(ANN)
    refused(other, issued.session, SESSION, "not signed by this node")
    refused(tokens, issued.login, SESSION, "login link")
    refused(tokens, issued.session, LOGIN, "not a login link")
    body, signature = issued.session.split(".")
    refused(tokens, body[:-2] + "xx." + signature, SESSION, "malformed|not signed")
    for garbage in ("", ".", "a.b", "é.é", "e30.", issued.session + "x"):
        with pytest.raises(NotAuthenticated):
            tokens.check(garbage, SESSION)


def test_a_login_link_is_redeemed_once_for_a_fresh_session():
    clock = Clock()
    tokens = Tokens(os.urandom(32), clock)
    issued = tokens.issue(ANN)
    claims, session = tokens.redeem(issued.login)
    assert claims.user == "ann" and session != issued.session
    assert tokens.check(session, SESSION).identity == ANN
    with pytest.raises(NotAuthenticated, match="used already"):
        tokens.redeem(issued.login)
    fresh = tokens.issue(ANN)
    clock.now += LOGIN_SECONDS + 1
    with pytest.raises(NotAuthenticated, match="expired"):
        tokens.redeem(fresh.login)


def test_each_session_has_its_own_csrf_token():
    tokens = Tokens(os.urandom(32))
    one, two = (tokens.check(tokens.issue(ANN).session, SESSION) for _ in range(2))
    assert tokens.csrf_matches(one, tokens.csrf(one))
    assert not tokens.csrf_matches(one, tokens.csrf(two))
    assert not tokens.csrf_matches(one, "")


def test_the_web_key_is_made_once_and_only_root_reads_it(tmp_path):
    path = tmp_path / "web.key"
    key = load_key(path)
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    assert load_key(path) == key
    path.write_bytes(b"short")
    with pytest.raises(ValueError, match="fewer than"):
        load_key(path)


def test_the_form_takes_lclients_add_options():
    spec, pool = spec_from({"command": "echo hi", "mem": "64M", "cpus": "0.5", "pids": 32, "timeout": "1m",
                            "env": "A=1\nB=x=y\n", "retries": "2", "node": "n1", "all_nodes": "on", "csrf": "t"})
    assert (spec.memory_bytes, spec.cpus, spec.pids, spec.timeout, spec.retries, spec.node) == (64 << 20, 0.5, 32, 60.0, 2, "n1")
    assert spec.env == {"A": "1", "B": "x=y"} and pool is True
    spec, pool = spec_from({"command": "true", "env": {"K": "V"}, "stdin": "in"})
    assert (spec.env, spec.stdin_data, spec.memory_bytes, pool) == ({"K": "V"}, b"in", None, False)
    spec, _ = spec_from({"command": "", "image": " debian ", "net": "bridge", "publish": "18080:8080\n\n9000:9000/udp\n",
                         "volumes": "/srv/my data:/data:ro\n", "workdir": "/data", "run_as": " nobody "})  # the form: one a line
    assert (spec.image, spec.net, spec.publish, spec.volumes, spec.workdir, spec.run_as) == (
        "debian", "bridge", ["18080:8080", "9000:9000/udp"], ["/srv/my data:/data:ro"], "/data", "nobody")
    spec, _ = spec_from({"command": "true", "publish": [], "volumes": ["/srv/a:/a"]})  # JSON lists
    assert (spec.net, spec.publish, spec.volumes, spec.image, spec.workdir) == ("none", [], ["/srv/a:/a"], "", "")
    for bad, words in [({"command": 3}, "command must be a string"), ({"command": "x", "mem": "lots"}, "bad mem value"),
                       ({"command": "x", "volumes": [1]}, "volumes must be a list of strings"),
                       ({"command": "x", "publish": {"a": 1}}, "publish must be a list"), ({"command": "x", "net": 1}, "net must"),
                       ({"command": "x", "ports": "80"}, "unknown field 'ports'"),
                       ({"command": "x", "env": "NOEQUALS"}, "bad env value"), ({"command": "x", "pids": True}, "bad pids"),
                       ({"command": "x", "all_nodes": "maybe"}, "bad all_nodes"), ([], "JSON object"),
                       ({"command": "x", "retries": "-1"}, "bad retries")]:
        with pytest.raises(InvalidSpec, match=words):
            spec_from(bad)


def test_output_is_cut_on_whole_utf8_characters():
    euro = "€".encode()  # three bytes
    assert _whole_characters(b"ab" + euro) == b"ab" + euro
    assert _whole_characters(b"ab" + euro[:2]) == b"ab"
    assert _whole_characters(b"ab" + euro[:1]) == b"ab"
    assert _whole_characters(b"") == b""
    assert _whole_characters(b"\x80\x80\x80\x80") == b"\x80\x80\x80\x80"  # not UTF-8 at all: as it is


def test_web_listen_is_host_and_port_or_nothing():
    assert Config().web_address == ("127.0.0.1", 8088)
    assert Config(web_listen="").web_address is None and Config(web_listen="").web_url == ""
    assert Config(web_listen="9000").web_url == "http://127.0.0.1:9000"
    assert Config(web_listen="0.0.0.0:9000", namespace="n1.example").web_url == "http://n1.example:9000"
    assert Config(web_listen="[::1]:9000").web_url == "http://[::1]:9000"
    for bad in ("host:", "host:70000", "nope"):
        with pytest.raises(ConfigError, match="--web-listen"):
            Config(web_listen=bad).validate()
