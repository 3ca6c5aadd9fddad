"""The JSON API under /api/: the documents `lclient -json` prints (lclient/format.py's job_json
and node_json), for curl and for the page's own script.

    GET  /api/nodes                      {"nodes": [node, ...]}
    GET  /api/jobs?state=&owner=&limit=  {"jobs": [job, ...]}, newest first
    GET  /api/jobs/<uuid>                job (a pool: with its members), as `lclient -check -json`
    GET  /api/jobs/<uuid>/logs?stdout_offset=&stderr_offset=
                                         {"stdout", "stderr", "offsets", "more", "state", "ended"}
    POST /api/jobs                       {"command": ..., and lclient -add's options} -> 201 job
    POST /api/jobs/<uuid>/kill           job, as `lclient -kill -json`
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from lclient.format import job_json, node_json
from lclusterd.errors import InvalidSpec
from lclusterd.states import TERMINAL
from lclusterd.web.context import web
from lclusterd.web.forms import number, spec_from

blueprint = Blueprint("api", __name__, url_prefix="/api")
DEFAULT_LIMIT = 100


def _calls():
    return web().calls


@blueprint.get("/nodes")
def nodes():
    return jsonify(nodes=[node_json(n) for n in _calls().nodes(g.caller)])


@blueprint.get("/jobs")
def jobs():
    states = [s for value in request.args.getlist("state") for s in value.split(",")]
    limit = number("limit", request.args.get("limit", str(DEFAULT_LIMIT)))
    found = _calls().jobs(g.caller, states, request.args.get("owner", "").strip(), limit)
    return jsonify(jobs=[job_json(job) for job in found])


@blueprint.get("/jobs/<job_id>")
def job(job_id: str):
    return jsonify(job_json(_calls().job(g.caller, job_id)))


@blueprint.get("/jobs/<job_id>/logs")
def logs(job_id: str):
    offsets = (number("stdout_offset", request.args.get("stdout_offset", "0")),
               number("stderr_offset", request.args.get("stderr_offset", "0")))
    out = _calls().output(g.caller, job_id, offsets)
    return jsonify(stdout=out.stdout.decode(errors="replace"), stderr=out.stderr.decode(errors="replace"),
                   offsets={"stdout": out.offsets[0], "stderr": out.offsets[1]}, more=out.more, state=out.state,
                   ended=out.state in TERMINAL)


@blueprint.post("/jobs")
def add():
    data = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    if data is None:
        raise InvalidSpec("the body is not JSON: send {\"command\": \"...\"} with Content-Type: application/json")
    spec, all_nodes = spec_from(data)
    return jsonify(job_json(_calls().add(g.caller, spec, all_nodes))), 201


@blueprint.post("/jobs/<job_id>/kill")
def kill(job_id: str):
    return jsonify(job_json(_calls().kill(g.caller, job_id)))
