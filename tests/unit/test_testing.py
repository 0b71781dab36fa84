from bastion.testing import make_auth, new_public_key


async def test_make_auth_is_initialised():
    fx = await make_auth()
    assert (await fx.auth.auth_preference()).spec.second_factor == "on"
    assert new_public_key()[1].startswith("ssh-ed25519 ")


def test_missing_peer_skips_locally_and_fails_under_ci(monkeypatch):
    import pytest

    from bastion.testing import missing_peer, require_binary

    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_binary("no-such-binary-bastion")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        missing_peer("sshd is not installed")
    assert require_binary("sh").endswith("/sh")
