from bastion.testing import make_auth, new_public_key


async def test_make_auth_is_initialised():
    fx = await make_auth()
    assert (await fx.auth.auth_preference()).spec.second_factor == "otp"
    assert new_public_key()[1].startswith("ssh-ed25519 ")
