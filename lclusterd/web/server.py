"""The web page's HTTP server: cheroot (CherryPy's WSGI server) with a fixed pool of threads,
bound at start-up before etcd is touched (a port in use fails the start, like the gRPC
port) and given its application once the node's services exist."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from cheroot import wsgi

from lclusterd.api.tokens import Tokens, WebPage, load_key

log = logging.getLogger(__name__)
THREADS = 8  # every request is short (the live tail polls), so a few threads serve many viewers
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class WebStartError(Exception):
    """The web page cannot start; one line for the operator."""


def bind_web(address: tuple[str, int], url: str, key_path: Path) -> tuple[WebServer, WebPage]:
    """A WebServer listening on `address` (serving nothing yet) and the page as the API knows
    it: its URL and the tokens signed with the node's web key at `key_path` (made if missing)."""
    try:
        page = WebPage(url, Tokens(load_key(key_path)))
    except (OSError, ValueError) as exc:
        raise WebStartError(f"the web page's key {key_path}: {exc}") from None
    server = WebServer(*address)
    try:
        server.bind()
    except OSError as exc:
        raise WebStartError(f"cannot listen on {url} for the web page: the port is in use or the address is not on "
                            f"this host ({exc}); pick another with --web-listen, or --web-listen '' for none") from None
    if address[0] not in LOOPBACK:
        log.warning("web page on %s: plain HTTP, its tokens readable on the network; keep it on loopback and "
                    "reach it through ssh -L", url)
    return server, page


def _not_yet(environ, start_response):
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"lclusterd is starting\n"]


class _Server(wsgi.Server):
    def error_log(self, msg="", level=20, traceback=False):  # cheroot's default writes to stderr
        log.log(level, "web server: %s", msg, exc_info=traceback)


class WebServer:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self._server = _Server((host, port), _not_yet, numthreads=THREADS, server_name="lclusterd")
        self._server.shutdown_timeout = 2
        self._thread: threading.Thread | None = None
        self._bound = False

    def bind(self) -> None:
        """Listen (OSError when the address is taken or not this host's); serves nothing yet."""
        self._server.prepare()
        self._bound = True

    @property
    def bound_port(self) -> int:
        return self._server.bind_addr[1]

    def serve(self, app) -> None:
        """Serve `app` (a WSGI application) on a thread of its own until stop()."""
        self._server.wsgi_app = app
        self._thread = threading.Thread(target=self._server.serve, name="web", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and end the worker threads (idempotent)."""
        if not self._bound:
            return
        self._bound = False
        self._server.stop()
        if self._thread is not None:
            self._thread.join(5)
