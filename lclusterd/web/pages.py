"""The web page's HTML: server-rendered (Jinja2 templates, which escape every value), with one
small script (static/tail.js) for the live tail of a job's output. Forms post here and are
answered with a redirect to the page that shows the result (post, redirect, get).

    GET  /                    nodes and their load; jobs newest first (?state=&owner=&limit=); submit
    GET  /jobs/<uuid>         a job's details, attempts (a pool's members) and output, live
    POST /jobs                submit (the form of /)
    POST /jobs/<uuid>/kill    kill
    GET  /login?token=...     a login link: swaps its token for a session cookie
    POST /logout              forget the session cookie
"""

from __future__ import annotations

import time

from flask import Blueprint, g, redirect, render_template, request, url_for

from lclient.format import attempts_json, exit_text, job_rows, outcome, pool_rows, signal_name
from lclient.units import format_size
from lclusterd.api.tokens import SESSION_SECONDS
from lclusterd.model import STATES
from lclusterd.states import TERMINAL
from lclusterd.web.context import web
from lclusterd.web.forms import number, spec_from
from lclusterd.web.rest import DEFAULT_LIMIT

blueprint = Blueprint("pages", __name__)


@blueprint.get("/")
def index():
    calls = web().calls
    state = request.args.get("state", "").strip().upper()
    owner = request.args.get("owner", "").strip()
    limit = number("limit", request.args.get("limit", str(DEFAULT_LIMIT)))
    jobs = calls.jobs(g.caller, [state] if state else [], owner, limit)
    return render_template("index.html", nodes=calls.nodes(g.caller), jobs=jobs, states=STATES, state=state, owner=owner,
                           limit=limit, **_helpers())


@blueprint.get("/jobs/<job_id>")
def job(job_id: str):
    found = web().calls.job(g.caller, job_id)
    rows = pool_rows(found) if found.is_pool or found.is_array else job_rows(found)
    attempts = attempts_json(found) if found.attempts else []
    return render_template("job.html", job=found, rows=rows, attempts=attempts, ended=found.state in TERMINAL, **_helpers())


@blueprint.post("/jobs")
def add():
    spec, all_nodes = spec_from({k: v for k, v in request.form.items() if v != "" or k == "command"})
    added = web().calls.add(g.caller, spec, all_nodes)
    return redirect(url_for("pages.job", job_id=added.id), 303)


@blueprint.post("/jobs/<job_id>/kill")
def kill(job_id: str):
    killed = web().calls.kill(g.caller, job_id)
    return redirect(url_for("pages.job", job_id=killed.id), 303)


@blueprint.get("/login")
def login():
    """A login link: its token (good once) becomes a session cookie, HttpOnly (no script reads
    it) and SameSite=Strict (no other site's page sends it); then on to the jobs, so the
    token leaves the address bar."""
    _claims, session = web().tokens.redeem(request.args.get("token", ""))
    response = redirect(url_for("pages.index"), 303)
    response.set_cookie(web().cookie, session, max_age=SESSION_SECONDS, httponly=True, samesite="Strict", path="/")
    return response


@blueprint.post("/logout")
def logout():
    response = redirect(url_for("pages.index"), 303)
    response.delete_cookie(web().cookie, path="/", httponly=True, samesite="Strict")
    return response


def _helpers() -> dict:
    """What the templates format with: lclient's own words for states, exits and sizes."""
    return {"outcome": outcome, "exit_text": exit_text, "format_size": format_size, "signal_name": signal_name,
            "when": _when, "age": _age, "terminal": TERMINAL}


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _age(ts: float) -> str:
    seconds = max(0.0, time.time() - ts) if ts else 0.0
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
