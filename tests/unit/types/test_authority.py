from bastion.testing import make_auth


async def test_without_secrets_strips_every_private_key():
    fx = await make_auth()
    ca = await fx.auth.issuer.ca("ssh_user")
    await fx.auth.rotate_ca("ssh_user", "init", "admin")
    ca = await fx.auth.issuer.ca("ssh_user")
    assert any(k.private_key_encrypted for k in ca.spec.trusted_keys())
    clean = ca.without_secrets()
    assert all(not k.private_key_encrypted for k in clean.spec.trusted_keys())
    assert len(clean.spec.trusted_keys()) == 2
