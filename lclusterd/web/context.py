"""What the web page's routes serve from, kept on the Flask application."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from lclusterd.api.tokens import Tokens
from lclusterd.web.calls import WebCalls


@dataclass(frozen=True)
class Web:
    """The calls, the tokens and this node's name."""

    calls: WebCalls
    tokens: Tokens
    node: str

    @property
    def cookie(self) -> str:
        # Browsers keep cookies per host, not per port: nodes on one host need names of their own.
        return f"lclusterd-{self.node}"


def web() -> Web:
    """The Web of the application serving this request."""
    return current_app.extensions["lclusterd"]
