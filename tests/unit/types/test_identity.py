from datetime import UTC, datetime

import pytest

from bastion.types.identity import Identity, RouteToTarget


def test_encode_is_canonical_and_round_trips():
    ident = Identity(
        cluster="c",
        user="alice",
        roles=("access",),
        logins=("alice",),
        traits={"team": ("a", "b")},
        expires=datetime(2026, 1, 1, tzinfo=UTC),
        route=RouteToTarget(node="web1", login="alice"),
        mfa_verified=True,
    )
    raw = ident.encode()
    assert b" " not in raw and raw.index(b'"cluster"') < raw.index(b'"user"')
    assert Identity.decode(raw) == ident
    assert b"device_id" not in raw  # defaults left out


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"version": 2}', b"\xff", b'{"version":1}'])
def test_decode_refuses_garbage(raw):
    with pytest.raises(ValueError):
        Identity.decode(raw)
