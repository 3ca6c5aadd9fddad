"""Who may do what (lclusterd/api/access.py) and who a call is (identity.py), without a server."""

from __future__ import annotations

import pytest

from lclusterd import certs
from lclusterd.api import access
from lclusterd.api.identity import Authenticator, Identity
from lclusterd.errors import NotAllowed, NotAuthenticated

ANN, BOB, ADMIN, NODE = Identity("ann"), Identity("bob"), Identity("boss", admin=True), Identity("n1", node=True)


def test_users_act_on_their_own_jobs_only():
    access.check_may_act(ANN, "ann", "kill", "j")
    access.check_may_act(ADMIN, "ann", "kill", "j")
    with pytest.raises(NotAllowed, match="user bob may not kill j: it is ann's job"):
        access.check_may_act(BOB, "ann", "kill", "j")
    with pytest.raises(NotAllowed, match="an admin's job"):  # a job from before identities
        access.check_may_act(ANN, "", "see", "j")
    with pytest.raises(NotAllowed):  # a node certificate named like a user is not that user
        access.check_may_act(Identity("ann", node=True), "ann", "see", "j")


def test_nodes_only_proxy_and_admins_drain():
    access.check_may_proxy(NODE)
    access.check_may_proxy(ADMIN)
    with pytest.raises(NotAllowed):
        access.check_may_proxy(ANN)
    with pytest.raises(NotAllowed, match="node n1 may not add"):
        access.check_may_add(NODE)
    access.check_may_add(ANN)
    with pytest.raises(NotAllowed, match="only admins"):
        access.check_admin(ANN, "drain a node")
    assert access.owner_filter(ANN) == "ann" and access.owner_filter(ADMIN) is None
    with pytest.raises(NotAllowed):
        access.owner_filter(NODE)


class Context:
    def __init__(self, peer: str, auth: dict | None = None):
        self._peer, self._auth = peer, auth or {}

    def peer(self):
        return self._peer

    def auth_context(self):
        return self._auth


def test_authenticator_reads_the_gate_the_certificate_or_plain_tcp(tmp_path):
    gate = {"lclusterd-n-1-1": ANN}
    authenticator = Authenticator(gate.get)
    assert authenticator.identify(Context("unix-abstract:lclusterd-n-1-1")) == ANN
    with pytest.raises(NotAuthenticated):  # an abstract address the gate did not hand over
        authenticator.identify(Context("unix-abstract:lclusterd-n-1-2"))
    assert authenticator.identify(Context("ipv4:127.0.0.1:5")) == Identity("root", admin=True)  # --insecure
    with pytest.raises(NotAuthenticated):
        authenticator.identify(Context("unix:"))
    certs.init_ca(tmp_path)
    certs.issue(tmp_path, "boss", certs.ADMIN)
    pem = (tmp_path / "boss.pem").read_bytes()
    secure = Context("ipv4:10.0.0.1:5", {"transport_security_type": [b"ssl"], "x509_pem_cert": [pem]})
    assert authenticator.identify(secure) == Identity("boss", admin=True)


def test_a_node_certificate_must_name_the_node_and_its_address(tmp_path):
    certs.init_ca(tmp_path)
    certs.issue(tmp_path, "n1", certs.NODE, ("10.0.0.1", "n1.example"))
    pem = (tmp_path / "n1.pem").read_bytes()
    certs.check_node_certificate(pem, "n1", "10.0.0.1")
    certs.check_node_certificate(pem, "n1", "n1.example")
    with pytest.raises(certs.CertError, match="does not name 10.0.0.2"):
        certs.check_node_certificate(pem, "n1", "10.0.0.2")
    with pytest.raises(certs.CertError, match="not node n2's"):
        certs.check_node_certificate(pem, "n2", "10.0.0.1")


def test_users_and_admins_log_in_to_the_web_page_and_nodes_do_not():
    access.check_may_use_web(ANN)
    access.check_may_use_web(ADMIN)
    with pytest.raises(NotAllowed, match="node n1 may not log in to the web page"):
        access.check_may_use_web(NODE)
