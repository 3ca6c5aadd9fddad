"""The web page's WSGI application (Flask): who is asking, what the answers look like, and
what every answer carries.

Every request but /login and /static/ must carry a session token (tokens.py): the session
cookie a login link set, or `Authorization: Bearer TOKEN` (the JSON API, for curl). A POST
authenticated by the cookie must also carry the session's CSRF token (the page's forms have
it as a hidden field, its script sends it as X-CSRF-Token); a Bearer request needs none, since
a browser never adds that header on its own. Errors are one line: {"error": ...} under /api/,
a small page elsewhere, with the status of web/errors.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from lclusterd.api.tokens import HOW_TO_LOG_IN, SESSION, Claims, Tokens
from lclusterd.errors import NotAllowed, NotAuthenticated
from lclusterd.web import pages, rest
from lclusterd.web.calls import WebCalls
from lclusterd.web.context import Web, web
from lclusterd.web.errors import status_of

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
OPEN_PATHS = ("/login", "/static/")  # answered without a session
# Only this origin's scripts, styles and images, no inline script, never in a frame (the kill
# button must not be clickable through someone else's page).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def create_app(calls: WebCalls, tokens: Tokens, node: str) -> Flask:
    app = Flask("lclusterd.web", template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"))
    app.config.update(MAX_CONTENT_LENGTH=2 << 20, TEMPLATES_AUTO_RELOAD=False)
    app.json.sort_keys = True
    app.extensions["lclusterd"] = Web(calls, tokens, node)
    app.register_blueprint(pages.blueprint)
    app.register_blueprint(rest.blueprint)
    app.before_request(_authenticate)
    app.after_request(_headers)
    app.register_error_handler(Exception, _error)
    app.jinja_env.globals["csrf"] = lambda: tokens.csrf(g.claims) if g.get("claims") else ""
    app.jinja_env.globals["node"] = node
    app.context_processor(lambda: {"caller": g.get("caller")})
    return app


def _authenticate() -> None:
    """g.claims and g.caller for the request's session; NotAuthenticated without one, and
    NotAllowed for a cookie POST without its CSRF token."""
    if request.path.startswith(OPEN_PATHS):
        return
    tokens = web().tokens
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated(f"the Authorization header must be 'Bearer TOKEN'; {HOW_TO_LOG_IN} (lclient -web -token prints one)")
        g.claims = tokens.check(token, SESSION)
    else:
        token = request.cookies.get(web().cookie)
        if not token:
            raise NotAuthenticated(f"not logged in: {HOW_TO_LOG_IN}")
        g.claims = tokens.check(token, SESSION)
        if request.method not in ("GET", "HEAD") and not _csrf_ok(tokens, g.claims):
            raise NotAllowed("the form's CSRF token is missing or not this session's: reload the page and try again")
    g.caller = g.claims.identity


def _csrf_ok(tokens: Tokens, claims: Claims) -> bool:
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf", "")
    return tokens.csrf_matches(claims, given)


def _headers(response):
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"  # a login link's token never leaves in a Referer
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


def _error(error: Exception):
    """One line for every error: JSON under /api/, a page elsewhere."""
    if isinstance(error, HTTPException):
        status, message = error.code or 500, f"{error.name}: {error.description}"
    else:
        status = status_of(error)
        if status == 500:
            log.exception("internal error in the web page")
            message = f"internal error in lclusterd: {type(error).__name__}: {error}"
        else:
            message = str(error)
    message = " ".join(message.split())
    if request.path.startswith("/api/"):
        response = jsonify(error=message)
    else:
        template = "login.html" if status == 401 else "error.html"
        response = current_app.make_response(render_template(template, status=status, message=message, how=HOW_TO_LOG_IN))
    response.status_code = status
    if status == 401 and request.path.startswith("/api/"):
        response.headers["WWW-Authenticate"] = 'Bearer realm="lclusterd"'
    return response
