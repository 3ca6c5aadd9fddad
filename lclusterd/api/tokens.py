"""Web tokens: how a browser (or curl) proves an API identity to this node's web page.

A browser cannot present the uid behind a Unix socket or a client certificate, so the web
page accepts only what the node itself signed for someone who had one: the WebLogin call
(authenticated like every other call, identity.py) mints tokens for its caller, and the web
page checks them with the same key. A token is `<payload>.<signature>`, both base64url; the
payload is JSON naming the user, whether they are an admin, its kind, its end, a random
id and, for a caller who came with a certificate, its serial number (a token of a certificate
revoked since is refused: `revoked`); the signature is HMAC-SHA256 under the node's web key
(`<state-dir>/web.key`, 32 random bytes, 0600, made at the first start and kept, so a restart
keeps sessions; removing it and restarting ends every token). Two kinds:

- a login token, in the link `lclient -web` prints: good for LOGIN_SECONDS and once (the
  page swaps it for a session at /login; the ids used are remembered until they expire);
- a session token: the session cookie, and `Authorization: Bearer` for the JSON API, good
  for SESSION_SECONDS.

Each session also has a CSRF token derived from its id (`csrf`), which the page's forms
carry; nothing about a session is stored on the node.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lclusterd.api.identity import Identity
from lclusterd.errors import NotAuthenticated

LOGIN = "login"
SESSION = "session"
LOGIN_SECONDS = 300  # a link printed in a terminal, opened in a browser soon after
SESSION_SECONDS = 8 * 3600  # a working day; then run lclient -web again
KEY_BYTES = 32
HOW_TO_LOG_IN = "run `lclient -web` as the user you want to be (on a node's socket or with your certificate) and open the link it prints"


@dataclass(frozen=True)
class Claims:
    """What a valid token says."""

    user: str
    admin: bool
    kind: str
    expires_at: float
    id: str
    serial: int | None = None  # the certificate the identity was proven with, if any

    @property
    def identity(self) -> Identity:
        return Identity(self.user, admin=self.admin, serial=self.serial)


@dataclass(frozen=True)
class Issued:
    """What WebLogin answers: a login link's token and a session token, with their ends."""

    login: str
    login_expires_at: float
    session: str
    expires_at: float


def load_key(path: str | Path) -> bytes:
    """The node's web key at `path`, made (0600, through a new file) when there is none."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) < KEY_BYTES:
            raise ValueError(f"{path} holds {len(key)} bytes, fewer than a web key's {KEY_BYTES}; remove it to make a new one")
        return key
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class Tokens:
    """Mints and checks this node's web tokens. Thread-safe (the web page's threads share it)."""

    def __init__(self, key: bytes, clock=time.time, revoked=lambda _serial: False):
        self._key = key
        self._clock = clock
        self.revoked = revoked  # a certificate's serial -> whether it is revoked (set once TLS is loaded)
        self._lock = threading.Lock()
        self._used_logins: dict[str, float] = {}  # login token id -> its end

    def issue(self, caller: Identity) -> Issued:
        now = self._clock()
        login, session = now + LOGIN_SECONDS, now + SESSION_SECONDS
        return Issued(self.mint(caller, LOGIN, login), login, self.mint(caller, SESSION, session), session)

    def mint(self, caller: Identity, kind: str, expires_at: float) -> str:
        payload = {"u": caller.name, "a": caller.admin, "k": kind, "e": int(expires_at), "i": secrets.token_hex(12)}
        if caller.serial is not None:
            payload["c"] = f"{caller.serial:x}"
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64(self._sign(body))}"

    def check(self, token: str, kind: str) -> Claims:
        """The claims of a token of `kind` this node signed and that has not expired;
        NotAuthenticated with a line saying what is wrong otherwise."""
        body, dot, signature = (token or "").strip().partition(".")
        try:
            given = _unb64(signature) if dot else b""
            data = json.loads(_unb64(body))
            serial = int(data["c"], 16) if "c" in data else None
            claims = Claims(str(data["u"]), bool(data["a"]), str(data["k"]), float(data["e"]), str(data["i"]), serial)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise NotAuthenticated(f"the web token is malformed; {HOW_TO_LOG_IN}") from None
        if not hmac.compare_digest(given, self._sign(body)):
            raise NotAuthenticated(f"the web token was not signed by this node; {HOW_TO_LOG_IN}")
        if claims.kind != kind:
            what = "a login link's token, not a session's" if claims.kind == LOGIN else "not a login link's token"
            raise NotAuthenticated(f"this is {what}; {HOW_TO_LOG_IN}")
        if claims.expires_at <= self._clock():
            raise NotAuthenticated(f"the web token expired at {_when(claims.expires_at)}; {HOW_TO_LOG_IN}")
        if claims.serial is not None and self.revoked(claims.serial):
            raise NotAuthenticated(f"the certificate this web token was issued for is revoked; {HOW_TO_LOG_IN}")
        return claims

    def redeem(self, token: str) -> tuple[Claims, str]:
        """A login token, once: its claims and a new session token for the same identity."""
        claims = self.check(token, LOGIN)
        now = self._clock()
        with self._lock:
            for used, end in list(self._used_logins.items()):
                if end <= now:
                    del self._used_logins[used]
            if claims.id in self._used_logins:
                raise NotAuthenticated(f"this login link was used already; {HOW_TO_LOG_IN}")
            self._used_logins[claims.id] = claims.expires_at
        return claims, self.mint(claims.identity, SESSION, now + SESSION_SECONDS)

    def csrf(self, claims: Claims) -> str:
        """The session's CSRF token: what its forms carry, derived from its id."""
        return _b64(hmac.new(self._key, b"csrf." + claims.id.encode(), hashlib.sha256).digest()[:18])

    def csrf_matches(self, claims: Claims, given: str) -> bool:
        return hmac.compare_digest(self.csrf(claims).encode(), (given or "").encode())

    def _sign(self, body: str) -> bytes:
        return hmac.new(self._key, b"lclusterd-web-v1." + body.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class WebPage:
    """This node's web page as the API knows it: where it is and its tokens."""

    url: str  # http://HOST:PORT
    tokens: Tokens

    def login_url(self, issued: Issued) -> str:
        return f"{self.url}/login?token={issued.login}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
