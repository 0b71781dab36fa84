"""The proxy's login pages: password login, SSO redirects and the WebAuthn ceremony.

Layer: web (IO shell over aiohttp). Minimal server-rendered HTML (``templates/``) and small
vanilla JS (``static/``) under a strict Content-Security-Policy; cookies are HttpOnly, Secure
and SameSite; every form POST carries a CSRF token. The full web UI (a later issue) reuses them.
"""

__all__: list[str] = []
