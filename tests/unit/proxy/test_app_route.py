from bastion.proxy.app_route import COOKIE, _strip_cookie


def test_our_cookie_never_reaches_the_app():
    assert _strip_cookie(f"a=1; {COOKIE}=secret; b=2") == "a=1; b=2"
    assert _strip_cookie(f"{COOKIE}=secret") == ""
    assert COOKIE.startswith("__Host-")  # host-only, Secure, Path=/: bound to the app's host
