"""Per-session MFA scopes and the certificate check of proxy and node (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import AccessDenied
from bastion.rbac.session_mfa import (
    MFA_REQUIRED_MESSAGE,
    SessionMFARefused,
    check_session_mfa,
    is_session_identity,
    parse_session_scope,
    session_scope,
)
from bastion.types.identity import Identity, RouteToTarget

EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def ident(**kw: Any) -> Identity:
    base: dict[str, Any] = {
        "cluster": "c",
        "user": "alice",
        "roles": ("prod",),
        "logins": ("root", "alice"),
        "expires": EXPIRES,
    }
    return Identity(**{**base, **kw})


def session_ident(node: str = "web1", login: str = "root", **kw: Any) -> Identity:
    fields: dict[str, Any] = {
        "logins": (login,),
        "mfa_verified": True,
        "mfa_scope": session_scope(node, login),
        "route": RouteToTarget(cluster="c", node=node, login=login),
    }
    return ident(**{**fields, **kw})


def test_scope_round_trip() -> None:
    assert session_scope("web1", "root") == "session:web1:root"
    assert parse_session_scope("session:web1:root") == ("web1", "root")


@pytest.mark.parametrize("scope", ["", "admin:POST /x", "session:", "session:web1", "session::x"])
def test_parse_refuses_non_session_scopes(scope: str) -> None:
    assert parse_session_scope(scope) is None


@pytest.mark.parametrize(("node", "login"), [("", "root"), ("web1", ""), ("a:b", "root")])
def test_scope_refuses_ambiguous_parts(node: str, login: str) -> None:
    with pytest.raises(ValueError):
        session_scope(node, login)


@given(st.text(min_size=1).filter(lambda s: ":" not in s), st.text(min_size=1))
def test_scope_parse_inverts_build(node: str, login: str) -> None:
    assert parse_session_scope(session_scope(node, login)) == (node, login)


def test_ordinary_certificate_allowed_when_not_required() -> None:
    assert check_session_mfa(ident(), node_names=("web1",), login="root", required=False) is None


def test_ordinary_certificate_refused_when_required_with_the_fix() -> None:
    refused = check_session_mfa(ident(), node_names=("web1", "h1"), login="root", required=True)
    assert isinstance(refused, SessionMFARefused) and isinstance(refused, AccessDenied)
    assert refused.message == MFA_REQUIRED_MESSAGE
    assert "root@web1" in refused.reason


def test_login_certificate_with_mfa_flag_but_no_session_scope_is_not_a_session_cert() -> None:
    login_cert = ident(mfa_verified=True)
    assert not is_session_identity(login_cert)
    assert check_session_mfa(login_cert, node_names=("web1",), login="root", required=True)


@pytest.mark.parametrize("required", [True, False])
def test_session_certificate_accepted_for_its_target(required: bool) -> None:
    cert = session_ident()
    assert is_session_identity(cert)
    assert (
        check_session_mfa(cert, node_names=("web1", "h1"), login="root", required=required) is None
    )


def test_session_certificate_matches_host_id_too() -> None:
    cert = session_ident(node="h-123")
    assert (
        check_session_mfa(cert, node_names=("web1", "h-123"), login="root", required=True) is None
    )


@pytest.mark.parametrize("required", [True, False])
@pytest.mark.parametrize(
    ("names", "login", "why"),
    [
        (("web2", "h2"), "root", "is for root@web1, not root@web2"),
        (("web1",), "alice", "is for root@web1, not alice@web1"),
        (("WEB1",), "root", "not root@WEB1"),
    ],
)
def test_session_certificate_refused_elsewhere(
    names: tuple[str, ...], login: str, why: str, required: bool
) -> None:
    # even where MFA is not required: a session certificate is good for its one target only
    refused = check_session_mfa(session_ident(), node_names=names, login=login, required=required)
    assert refused is not None and why in refused.reason and why in refused.message


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"mfa_verified": False}, "malformed"),
        ({"mfa_scope": "session:web1"}, "malformed"),
        ({"route": None}, "route does not match"),
        ({"route": RouteToTarget(node="web2", login="root")}, "route does not match"),
        ({"logins": ("root", "alice")}, "other logins"),
    ],
)
def test_inconsistent_session_certificates_fail_closed(overrides: dict[str, Any], why: str) -> None:
    cert = session_ident(**overrides)
    refused = check_session_mfa(cert, node_names=("web1",), login="root", required=False)
    assert refused is not None and why in refused.reason


_names = st.sampled_from(["web1", "web2", "db1", "h-1"])
_logins = st.sampled_from(["root", "alice", "ubuntu"])


@given(_names, _logins, st.lists(_names, min_size=1, max_size=3), _logins, st.booleans())
def test_session_certificate_accepted_exactly_for_its_target(
    cert_node: str, cert_login: str, names: list[str], login: str, required: bool
) -> None:
    refused = check_session_mfa(
        session_ident(node=cert_node, login=cert_login),
        node_names=names,
        login=login,
        required=required,
    )
    assert (refused is None) is (cert_node in names and cert_login == login)


@given(_names, _logins, st.booleans())
def test_ordinary_certificate_refused_exactly_when_required(
    node: str, login: str, required: bool
) -> None:
    refused = check_session_mfa(ident(), node_names=(node,), login=login, required=required)
    assert (refused is not None) is required
