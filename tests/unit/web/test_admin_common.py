"""What the admin pages share: escaping, notices, and a navigation that follows the rights."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bastion.web.admin_common import esc, nav, notice


def _ctx(rights: set[tuple[str, str]], user: str = "<alice>") -> Any:
    return SimpleNamespace(user=user, may=lambda kind, verb: (kind, verb) in rights)


def test_notices_escape_and_say_what_they_are() -> None:
    assert esc('<a href="x">') == "&lt;a href=&quot;x&quot;&gt;"
    assert notice("<b>done</b>") == '<p class="notice ok" role="status">&lt;b&gt;done&lt;/b&gt;</p>'
    assert 'role="alert"' in notice("no", error=True)


def test_navigation_shows_only_what_the_roles_allow() -> None:
    plain = nav(_ctx(set()))
    assert "/web/nodes" in plain and "/web/recordings" in plain and "/web/sessions" in plain
    assert "/web/admin/" not in plain and "&lt;alice&gt;" in plain
    auditor = nav(_ctx({("event", "list")}))
    assert "/web/admin/audit" in auditor and "/web/admin/users" not in auditor
