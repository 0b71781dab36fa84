"""RoleSet decisions: tables for every check, explanations, and Hypothesis properties.

The properties compare against a deliberately naive reference model written here, so a bug in
the compiled fast path of :mod:`bastion.rbac.checker` cannot hide behind itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import BadParameter
from bastion.rbac import Decision, RoleSet
from bastion.types import load_resources
from bastion.types.access import Role, RoleConditions, RoleOptions, RoleSpec, Rule
from bastion.types.meta import Metadata

TRAITS = {"logins": ["alice", "ubuntu"], "db_users": ["reader"], "db_names": ["orders"]}


def role(
    name: str,
    allow: dict[str, Any] | None = None,
    deny: dict[str, Any] | None = None,
    **options: Any,
) -> Role:
    return Role(
        metadata=Metadata(name=name),
        spec=RoleSpec(
            allow=RoleConditions(**(allow or {})),
            deny=RoleConditions(**(deny or {})),
            options=RoleOptions(**options),
        ),
    )


DEV = role("dev", {"logins": ["{{internal.logins}}"], "node_labels": {"env": ["dev", "staging"]}})
PROD_RO = role(
    "prod-ro", {"logins": ["readonly"], "node_labels": {"env": "prod", "team": "^(web|db)$"}}
)
ROOT_EVERYWHERE = role("root", {"logins": ["root"], "node_labels": {"*": "*"}})
NO_ROOT = role("no-root", deny={"logins": ["root"]})
NO_PROD = role("no-prod", deny={"node_labels": {"env": "prod"}})
NO_SECRET = role("no-secret", deny={"node_labels": {"secret": "*"}})


@pytest.mark.parametrize(
    ("roles", "labels", "login", "allowed", "by", "reason"),
    [
        (
            [DEV],
            {"env": "dev"},
            "alice",
            True,
            "dev",
            'role "dev" allows login "alice" on node "n1"',
        ),
        ([DEV], {"env": "staging"}, "ubuntu", True, "dev", "allows"),
        (
            [DEV],
            {"env": "prod"},
            "alice",
            False,
            None,
            'role "dev": label env=prod not in [dev, staging]',
        ),
        ([DEV], {}, "alice", False, None, 'role "dev": label env missing'),
        (
            [DEV],
            {"env": "dev"},
            "root",
            False,
            None,
            'role "dev": login "root" not in [alice, ubuntu]',
        ),
        ([PROD_RO], {"env": "prod", "team": "web"}, "readonly", True, "prod-ro", "allows"),
        (
            [PROD_RO],
            {"env": "prod", "team": "webx"},
            "readonly",
            False,
            None,
            "label team=webx not in [^(web|db)$]",
        ),
        (
            [DEV, PROD_RO],
            {"env": "prod", "team": "db"},
            "alice",
            False,
            None,
            'role "prod-ro": login "alice" not in [readonly]',
        ),
        ([ROOT_EVERYWHERE], {}, "root", True, "root", "allows"),
        # deny by login: everywhere, even where another role allows it
        (
            [ROOT_EVERYWHERE, NO_ROOT],
            {},
            "root",
            False,
            "no-root",
            'role "no-root" denies login "root" on every node',
        ),
        ([NO_ROOT, ROOT_EVERYWHERE], {"env": "dev"}, "root", False, "no-root", "denies login"),
        ([DEV, NO_ROOT], {"env": "dev"}, "alice", True, "dev", "allows"),
        # deny by labels: every login
        ([DEV, NO_PROD], {"env": "dev"}, "alice", True, "dev", "allows"),
        (
            [ROOT_EVERYWHERE, NO_PROD],
            {"env": "prod"},
            "root",
            False,
            "no-prod",
            'role "no-prod" denies node "n1": deny node_labels match (env=[prod])',
        ),
        (
            [ROOT_EVERYWHERE, NO_SECRET],
            {"secret": ""},
            "root",
            False,
            "no-secret",
            "deny node_labels match (secret=[*])",
        ),
        ([ROOT_EVERYWHERE, NO_SECRET], {"env": "x"}, "root", True, "root", "allows"),
        # a role without labels or logins grants nothing
        ([role("empty")], {"env": "dev"}, "alice", False, None, 'role "empty": no node_labels'),
        (
            [role("nologin", {"node_labels": {"*": "*"}})],
            {},
            "alice",
            False,
            None,
            'role "nologin": grants no logins',
        ),
        ([], {"env": "dev"}, "alice", False, None, "the user has no roles"),
    ],
)
def test_check_node_access(
    roles: list[Role],
    labels: dict[str, str],
    login: str,
    allowed: bool,
    by: str | None,
    reason: str,
) -> None:
    decision = RoleSet.from_roles(roles, TRAITS).check_node_access("n1", labels, login)
    assert decision.allowed is allowed
    assert decision.role == by
    assert reason in decision.reason


def test_grants_are_not_combined_across_roles() -> None:
    labels_only = role("labels", {"logins": ["x"], "node_labels": {"env": "prod"}})
    login_only = role("login", {"logins": ["root"], "node_labels": {"env": "dev"}})
    decision = RoleSet.from_roles([labels_only, login_only], {}).check_node_access(
        "n", {"env": "prod"}, "root"
    )
    assert not decision.allowed
    assert 'role "labels": login "root" not in [x]' in decision.reason
    assert 'role "login": label env=prod not in [dev]' in decision.reason


@pytest.mark.parametrize(
    ("traits", "labels", "login", "allowed"),
    [
        ({"team": ["web"]}, {"team": "web"}, "web-admin", True),
        ({"team": ["web", "db"]}, {"team": "db"}, "db-admin", True),
        ({"team": ["web"]}, {"team": "db"}, "web-admin", False),
        ({}, {"team": "web"}, "web-admin", False),  # missing trait: key selects nothing
        ({"team": ["*"]}, {"team": "anything"}, "*-admin", True),  # trait values are not escaped
    ],
)
def test_templates_in_labels_and_logins(
    traits: dict[str, list[str]], labels: dict[str, str], login: str, allowed: bool
) -> None:
    team = role(
        "team",
        {"logins": ["{{external.team}}-admin"], "node_labels": {"team": "{{external.team}}"}},
    )
    assert (
        RoleSet.from_roles([team], traits).check_node_access("n", labels, login).allowed is allowed
    )


def test_deny_template_with_missing_trait_denies_nothing() -> None:
    deny = role(
        "deny-team",
        deny={"node_labels": {"team": "{{external.team}}"}, "logins": ["{{external.x}}"]},
    )
    roles = RoleSet.from_roles([ROOT_EVERYWHERE, deny], {})
    assert roles.check_node_access("n", {"team": "web"}, "root").allowed


@pytest.mark.parametrize(
    ("roles", "labels", "visible", "reason"),
    [
        ([DEV], {"env": "dev"}, True, 'role "dev" shows node "n1"'),
        (
            [DEV],
            {"env": "prod"},
            False,
            'no role allows to see node "n1": role "dev": label env=prod',
        ),
        ([role("nologin", {"node_labels": {"env": "dev"}})], {"env": "dev"}, True, "shows"),
        ([ROOT_EVERYWHERE, NO_PROD], {"env": "prod"}, False, 'role "no-prod" denies node "n1"'),
        ([ROOT_EVERYWHERE, NO_ROOT], {"env": "prod"}, True, "shows"),  # deny logins do not hide
        ([], {}, False, "no roles"),
    ],
)
def test_check_node_visible(
    roles: list[Role], labels: dict[str, str], visible: bool, reason: str
) -> None:
    decision = RoleSet.from_roles(roles, TRAITS).check_node_visible("n1", labels)
    assert decision.allowed is visible
    assert reason in decision.reason


def test_allowed_logins() -> None:
    other = role("other", {"logins": ["root", "alice", "deploy"], "node_labels": {"*": "*"}})
    roles = RoleSet.from_roles([DEV, other, NO_ROOT], TRAITS)
    assert roles.allowed_logins() == ["alice", "ubuntu", "deploy"]
    assert RoleSet.from_roles([DEV], {}).allowed_logins() == []


ADMIN = role("admin", {"rules": [Rule(resources=["*"], verbs=["*"])]})
READER = role("reader", {"rules": [Rule(resources=["user", "role"], verbs=["list", "read"])]})
NO_DELETE = role("no-delete", deny={"rules": [Rule(resources=["*"], verbs=["delete"])]})
NO_ROLES = role("no-roles", deny={"rules": [Rule(resources=["role"], verbs=["*"])]})


@pytest.mark.parametrize(
    ("roles", "kind", "verb", "allowed", "reason"),
    [
        ([ADMIN], "lock", "delete", True, 'role "admin" allows delete on lock'),
        ([READER], "user", "read", True, 'role "reader" allows read on user'),
        ([READER], "role", "list", True, "allows"),
        ([READER], "user", "update", False, 'no role allows update on user (roles: "reader")'),
        ([READER], "token", "read", False, "no role allows"),
        ([ADMIN, NO_DELETE], "user", "delete", False, 'role "no-delete" denies delete on user'),
        ([NO_DELETE, ADMIN], "user", "update", True, "allows"),
        ([ADMIN, NO_ROLES], "role", "read", False, 'role "no-roles" denies read on role'),
        ([ADMIN, NO_ROLES], "user", "read", True, "allows"),
        ([], "user", "read", False, "(roles: none)"),
    ],
)
def test_check_rule(roles: list[Role], kind: str, verb: str, allowed: bool, reason: str) -> None:
    decision = RoleSet.from_roles(roles, {}).check_rule(kind, verb)
    assert decision.allowed is allowed
    assert reason in decision.reason


@pytest.mark.parametrize(
    ("kind", "verb"), [("users", "read"), ("user", "write"), ("*", "read"), ("user", "*")]
)
def test_check_rule_rejects_unknown_questions(kind: str, verb: str) -> None:
    with pytest.raises(ValueError, match="unknown"):
        RoleSet.from_roles([ADMIN], {}).check_rule(kind, verb)


DB = role(
    "db",
    {
        "db_labels": {"env": "dev"},
        "db_users": ["{{internal.db_users}}", "^svc-.*$"],
        "db_names": ["{{internal.db_names}}", "public"],
    },
)
DB_ANY = role("db-any", {"db_labels": {"*": "*"}, "db_users": ["*"], "db_names": ["*"]})
DB_NO_ADMIN = role("db-no-admin", deny={"db_users": ["postgres"], "db_names": ["^secret.*$"]})
DB_NO_PROD = role("db-no-prod", deny={"db_labels": {"env": "prod"}})


@pytest.mark.parametrize(
    ("roles", "labels", "user", "name", "allowed", "reason"),
    [
        (
            [DB],
            {"env": "dev"},
            "reader",
            "orders",
            True,
            'role "db" allows db user "reader" db name "orders" on database "pg"',
        ),
        ([DB], {"env": "dev"}, "svc-api", "public", True, "allows"),
        ([DB], {"env": "dev"}, "reader", None, True, "allows"),
        (
            [DB],
            {"env": "dev"},
            "writer",
            "orders",
            False,
            'role "db": db user "writer" not in [reader, ^svc-.*$]',
        ),
        (
            [DB],
            {"env": "dev"},
            "reader",
            "users",
            False,
            'role "db": db name "users" not in [orders, public]',
        ),
        (
            [DB],
            {"env": "prod"},
            "reader",
            "orders",
            False,
            'role "db": label env=prod not in [dev]',
        ),
        ([DB_ANY], {}, "postgres", "x", True, "allows"),
        (
            [DB_ANY, DB_NO_ADMIN],
            {},
            "postgres",
            "x",
            False,
            'role "db-no-admin" denies db user "postgres"',
        ),
        (
            [DB_ANY, DB_NO_ADMIN],
            {},
            "app",
            "secrets",
            False,
            'role "db-no-admin" denies db name "secrets"',
        ),
        ([DB_ANY, DB_NO_ADMIN], {}, "app", None, True, "allows"),
        (
            [DB_ANY, DB_NO_PROD],
            {"env": "prod"},
            "app",
            "x",
            False,
            'role "db-no-prod" denies database "pg": deny db_labels match',
        ),
        ([ROOT_EVERYWHERE], {}, "app", "x", False, 'role "root": no db_labels'),
        ([], {}, "app", "x", False, "no roles"),
    ],
)
def test_check_db_access(
    roles: list[Role],
    labels: dict[str, str],
    user: str,
    name: str | None,
    allowed: bool,
    reason: str,
) -> None:
    decision = RoleSet.from_roles(roles, TRAITS).check_db_access(
        labels, user, name, db_service="pg"
    )
    assert decision.allowed is allowed
    assert reason in decision.reason


APP = role("app", {"app_labels": {"tier": ["^(front|back)end$"]}})
APP_NO_ADMIN = role("app-no-admin", deny={"app_labels": {"admin": "true"}})


@pytest.mark.parametrize(
    ("roles", "labels", "allowed", "reason"),
    [
        ([APP], {"tier": "frontend"}, True, 'role "app" allows access to app "grafana"'),
        ([APP], {"tier": "db"}, False, 'role "app": label tier=db not in [^(front|back)end$]'),
        (
            [APP, APP_NO_ADMIN],
            {"tier": "backend", "admin": "true"},
            False,
            'role "app-no-admin" denies app "grafana"',
        ),
        ([APP, APP_NO_ADMIN], {"tier": "backend", "admin": "false"}, True, "allows"),
        ([], {}, False, "no roles"),
    ],
)
def test_check_app_access(
    roles: list[Role], labels: dict[str, str], allowed: bool, reason: str
) -> None:
    decision = RoleSet.from_roles(roles, TRAITS).check_app_access(labels, app_name="grafana")
    assert decision.allowed is allowed
    assert reason in decision.reason


def test_options_most_restrictive_wins() -> None:
    loose = role(
        "loose",
        max_session_ttl="30h",
        forward_agent=True,
        record_session=False,
        client_idle_timeout="1h",
    )
    strict = role(
        "strict",
        max_session_ttl="1h",
        require_session_mfa=True,
        permit_pty=False,
        port_forwarding=False,
        forward_agent=True,
        lock_mode="strict",
        client_idle_timeout="10m",
        disconnect_expired_cert=True,
        pin_source_ip=True,
    )
    roles = RoleSet.from_roles([loose, strict], {})
    assert roles.max_session_ttl() == timedelta(hours=1)
    assert roles.options() == RoleOptions(
        max_session_ttl=timedelta(hours=1),
        require_session_mfa=True,
        permit_pty=False,
        port_forwarding=False,
        forward_agent=True,
        record_session=True,
        lock_mode="strict",
        client_idle_timeout=timedelta(minutes=10),
        disconnect_expired_cert=True,
        pin_source_ip=True,
    )
    assert RoleSet.from_roles([loose], {}).options().record_session is False
    mixed = RoleSet.from_roles([loose, role("plain")], {}).options()
    assert (mixed.forward_agent, mixed.record_session, mixed.client_idle_timeout) == (
        False,
        True,
        timedelta(hours=1),
    )
    assert RoleSet.from_roles([role("plain")], {}).options().client_idle_timeout is None


def test_no_roles_options() -> None:
    roles = RoleSet.from_roles([], {})
    assert roles.max_session_ttl() == timedelta(0)
    options = roles.options()
    options.max_session_ttl = timedelta(hours=99)  # a copy: mutating it changes nothing
    assert roles.max_session_ttl() == timedelta(0)


def test_role_set_is_frozen() -> None:
    roles = RoleSet.from_roles([DEV], TRAITS)
    assert roles.role_names == ("dev",)
    assert roles.roles[0].allow.logins == ("alice", "ubuntu")
    with pytest.raises(AttributeError):
        roles.other = 1  # type: ignore[attr-defined]
    decision = Decision(True, "r", "dev")
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("logins", '["{{internal.logins"]', None),
        ("logins", '["{{external.a}}{{external.b}}"]', None),
        ("db_users", '["{{nope.x}}"]', None),
        ("node_labels", '{env: "{{internal.logins"}', "env"),
        ("db_labels", '{team: \'{{regexp.replace(external.t, "(", "x")}}\'}', "team"),
    ],
)
def test_types_layer_reports_template_errors(field: str, value: str, key: str | None) -> None:
    text = f"kind: role\nmetadata: {{name: dev}}\nspec:\n  allow:\n    {field}: {value}\n"
    with pytest.raises(BadParameter) as info:
        load_resources(text)
    message = str(info.value)
    # The field path, then the label key (``node_labels.env:`` or ``node_labels: env:``).
    where = rf"spec\.allow\.{field}" + (rf"(\.|: ){key}" if key else "")
    assert message.startswith('role "dev": ')
    assert re.search(where + r': invalid template "', message), message


# -- properties ----------------------------------------------------------------------------

KEYS = ["env", "team", "region"]
VALUES = ["prod", "dev", "staging"]
LOGINS = ["root", "alice", "ubuntu"]


def naive_labels(selector: Mapping[str, Sequence[str]], labels: Mapping[str, str]) -> bool:
    if not selector:
        return False
    for key, values in selector.items():
        if key == "*" and "*" in values:
            continue
        if key not in labels:
            return False
        value = labels[key]
        ok = False
        for wanted in values:
            if wanted == "*" or wanted == value:
                ok = True
            elif wanted == "^pr.*$":
                ok = ok or value.startswith("pr")
            elif wanted == "^(dev|staging)$":
                ok = ok or value in ("dev", "staging")
        if not ok:
            return False
    return True


def naive_expand(values: Sequence[str], traits: Mapping[str, Sequence[str]]) -> list[str]:
    out: list[str] = []
    for value in values:
        out += list(traits.get("logins", [])) if value == "{{internal.logins}}" else [value]
    return out


def naive_node_access(
    roles: Sequence[Role],
    traits: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    login: str,
) -> bool:
    for r in roles:
        if login in naive_expand(r.spec.deny.logins, traits) or naive_labels(
            r.spec.deny.node_labels, labels
        ):
            return False
    return any(
        login in naive_expand(r.spec.allow.logins, traits)
        and naive_labels(r.spec.allow.node_labels, labels)
        for r in roles
    )


_selector_value = st.sampled_from([*VALUES, "*", "^pr.*$", "^(dev|staging)$"])
_selectors: st.SearchStrategy[dict[str, list[str]]] = st.one_of(
    st.just({}),
    st.just({"*": ["*"]}),
    st.dictionaries(
        st.sampled_from(KEYS), st.lists(_selector_value, min_size=1, max_size=2), max_size=2
    ),
)
_logins = st.lists(st.sampled_from([*LOGINS, "{{internal.logins}}"]), max_size=3)
_conditions = st.builds(
    lambda logins, node: RoleConditions(logins=logins, node_labels=node), _logins, _selectors
)
_allow_only = st.builds(lambda allow: RoleSpec(allow=allow), _conditions)
_deny_only = st.builds(lambda deny: RoleSpec(deny=deny), _conditions)
_specs = st.one_of(
    _allow_only,
    _deny_only,
    st.builds(lambda a, d: RoleSpec(allow=a, deny=d), _conditions, _conditions),
)


def _named(specs: Sequence[RoleSpec], prefix: str = "r") -> list[Role]:
    return [Role(metadata=Metadata(name=f"{prefix}{i}"), spec=s) for i, s in enumerate(specs)]


_roles = st.lists(_specs, max_size=5).map(_named)
_node_labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES))
_traits = st.fixed_dictionaries(
    {}, optional={"logins": st.lists(st.sampled_from(LOGINS), max_size=2)}
)
_login = st.sampled_from(LOGINS)


@settings(max_examples=300)
@given(_roles, _traits, _node_labels, _login)
def test_matches_reference_model(
    roles: list[Role], traits: dict[str, list[str]], labels: dict[str, str], login: str
) -> None:
    decision = RoleSet.from_roles(roles, traits).check_node_access("n", labels, login)
    assert decision.allowed is naive_node_access(roles, traits, labels, login)


@given(_roles, _traits, _node_labels, _login, st.integers(min_value=0, max_value=5), st.booleans())
def test_matching_deny_always_wins(
    roles: list[Role],
    traits: dict[str, list[str]],
    labels: dict[str, str],
    login: str,
    at: int,
    by_login: bool,
) -> None:
    deny = (
        RoleConditions(logins=[login])
        if by_login
        else RoleConditions(node_labels={k: [v] for k, v in labels.items()} or {"*": ["*"]})
    )
    denier = Role(metadata=Metadata(name="denier"), spec=RoleSpec(deny=deny))
    roles.insert(min(at, len(roles)), denier)
    role_set = RoleSet.from_roles(roles, traits)
    decision = role_set.check_node_access("n", labels, login)
    assert not decision.allowed
    assert decision.role is not None and decision.role in role_set.role_names
    if not by_login:
        assert not role_set.check_node_visible("n", labels).allowed


@given(_roles, _traits, _node_labels, _login)
def test_any_role_set_with_matching_deny_denies(
    roles: list[Role], traits: dict[str, list[str]], labels: dict[str, str], login: str
) -> None:
    has_matching_deny = any(
        login in naive_expand(r.spec.deny.logins, traits)
        or naive_labels(r.spec.deny.node_labels, labels)
        for r in roles
    )
    if has_matching_deny:
        assert not RoleSet.from_roles(roles, traits).check_node_access("n", labels, login).allowed


@given(
    _roles,
    st.lists(_allow_only, min_size=1, max_size=2),
    _traits,
    _node_labels,
    _login,
    st.integers(0, 5),
)
def test_adding_allow_only_roles_never_removes_access(
    roles: list[Role],
    extra: list[RoleSpec],
    traits: dict[str, list[str]],
    labels: dict[str, str],
    login: str,
    at: int,
) -> None:
    before = RoleSet.from_roles(roles, traits)
    more = roles[:at] + _named(extra, "extra") + roles[at:]
    after = RoleSet.from_roles(more, traits)
    if before.check_node_access("n", labels, login).allowed:
        assert after.check_node_access("n", labels, login).allowed
    if before.check_node_visible("n", labels).allowed:
        assert after.check_node_visible("n", labels).allowed
    assert set(before.allowed_logins()) <= set(after.allowed_logins())


@given(_roles, st.lists(_deny_only, min_size=1, max_size=2), _traits, _node_labels, _login)
def test_adding_deny_only_roles_never_grants(
    roles: list[Role],
    extra: list[RoleSpec],
    traits: dict[str, list[str]],
    labels: dict[str, str],
    login: str,
) -> None:
    before = RoleSet.from_roles(roles, traits)
    after = RoleSet.from_roles(roles + _named(extra, "deny"), traits)
    if after.check_node_access("n", labels, login).allowed:
        assert before.check_node_access("n", labels, login).allowed
    assert set(after.allowed_logins()) <= set(before.allowed_logins())


@given(_node_labels, _login, _traits)
def test_no_roles_deny_everything(
    labels: dict[str, str], login: str, traits: dict[str, list[str]]
) -> None:
    empty = RoleSet.from_roles([], traits)
    for decision in (
        empty.check_node_access("n", labels, login),
        empty.check_node_visible("n", labels),
        empty.check_db_access(labels, login, login),
        empty.check_app_access(labels),
        empty.check_rule("user", "read"),
    ):
        assert not decision.allowed and decision.role is None
    assert empty.allowed_logins() == []


@given(_roles, _traits, _node_labels, _login)
def test_access_implies_visible_and_login_listed(
    roles: list[Role], traits: dict[str, list[str]], labels: dict[str, str], login: str
) -> None:
    role_set = RoleSet.from_roles(roles, traits)
    decision = role_set.check_node_access("n", labels, login)
    if decision.allowed:
        assert role_set.check_node_visible("n", labels).allowed
        assert login in role_set.allowed_logins()
        assert decision.role in role_set.role_names
    else:
        assert decision.reason


_rule = st.builds(
    lambda kinds, verbs: Rule(resources=kinds, verbs=verbs),
    st.lists(st.sampled_from(["*", "user", "role", "lock"]), min_size=1, max_size=2),
    st.lists(st.sampled_from(["*", "read", "delete"]), min_size=1, max_size=2),
)
_rule_specs = st.builds(
    lambda a, d: RoleSpec(allow=RoleConditions(rules=a), deny=RoleConditions(rules=d)),
    st.lists(_rule, max_size=2),
    st.lists(_rule, max_size=2),
)


@given(
    st.lists(_rule_specs, max_size=4).map(_named),
    st.sampled_from(["user", "role", "lock"]),
    st.sampled_from(["read", "delete"]),
)
def test_rules_deny_wins(roles: list[Role], kind: str, verb: str) -> None:
    def hits(rules: Sequence[Rule]) -> bool:
        return any(
            (kind in r.resources or "*" in r.resources) and (verb in r.verbs or "*" in r.verbs)
            for r in rules
        )

    denied = any(hits(r.spec.deny.rules) for r in roles)
    allowed = any(hits(r.spec.allow.rules) for r in roles)
    assert RoleSet.from_roles(roles, {}).check_rule(kind, verb).allowed is (allowed and not denied)


# ---- per-session MFA in node decisions ---------------------------------------------------------

PROD_MFA = role(
    "prod-mfa", {"logins": ["root"], "node_labels": {"env": "prod"}}, require_session_mfa=True
)
ANY_NO_MFA = role("any", {"logins": ["root"], "node_labels": {"*": "*"}})


@pytest.mark.parametrize(
    ("roles", "labels", "cluster", "allowed", "mfa", "by"),
    [
        ([PROD_MFA], {"env": "prod"}, False, True, True, "prod-mfa"),
        ([PROD_MFA], {"env": "dev"}, False, False, False, None),
        ([DEV], {"env": "dev"}, False, True, False, "dev"),
        ([DEV], {"env": "dev"}, True, True, True, "dev"),
        # a role that grants the same access without MFA is enough (Teleport's per-role rule)
        ([PROD_MFA, ANY_NO_MFA], {"env": "prod"}, False, True, False, "any"),
        ([ANY_NO_MFA, PROD_MFA], {"env": "prod"}, False, True, False, "any"),
        # ... unless the cluster requires it for everyone
        ([PROD_MFA, ANY_NO_MFA], {"env": "prod"}, True, True, True, "prod-mfa"),
        # a role with require_session_mfa that does not grant this access does not require it
        ([PROD_MFA, DEV], {"env": "dev"}, False, False, False, None),
    ],
)
def test_node_access_mfa_required(
    roles: list[Role],
    labels: dict[str, str],
    cluster: bool,
    allowed: bool,
    mfa: bool,
    by: str | None,
) -> None:
    login = "root" if roles[0] is not DEV else "alice"
    decision = RoleSet.from_roles(roles, TRAITS).check_node_access(
        "n1", labels, login, cluster_requires_mfa=cluster
    )
    assert (decision.allowed, decision.mfa_required, decision.role) == (allowed, mfa, by)
    if mfa:
        assert "per-session MFA" in decision.reason


def test_mfa_role_for_other_login_does_not_require_mfa() -> None:
    dev_logins = role("dev2", {"logins": ["alice"], "node_labels": {"env": "prod"}})
    decision = RoleSet.from_roles([PROD_MFA, dev_logins], TRAITS).check_node_access(
        "n1", {"env": "prod"}, "alice"
    )
    assert decision.allowed and not decision.mfa_required


_mfa_specs = st.builds(
    lambda allow, mfa: RoleSpec(allow=allow, options=RoleOptions(require_session_mfa=mfa)),
    _conditions,
    st.booleans(),
)


@settings(max_examples=300)
@given(st.lists(_mfa_specs, max_size=4).map(_named), _traits, _node_labels, _login, st.booleans())
def test_mfa_required_matches_reference_model(
    roles: list[Role],
    traits: dict[str, list[str]],
    labels: dict[str, str],
    login: str,
    cluster: bool,
) -> None:
    decision = RoleSet.from_roles(roles, traits).check_node_access(
        "n", labels, login, cluster_requires_mfa=cluster
    )
    granting = [
        r
        for r in roles
        if login in naive_expand(r.spec.allow.logins, traits)
        and naive_labels(r.spec.allow.node_labels, labels)
    ]
    assert decision.allowed is bool(granting)
    expected = bool(granting) and (
        cluster or all(r.spec.options.require_session_mfa for r in granting)
    )
    assert decision.mfa_required is expected


def test_app_access_takes_per_session_mfa_when_every_allowing_role_requires_it():
    def role(name: str, mfa: bool) -> Role:
        return Role(
            metadata=Metadata(name=name),
            spec=RoleSpec(
                allow=RoleConditions(app_labels={"env": "dev"}),
                options=RoleOptions(require_session_mfa=mfa),
            ),
        )

    only_mfa = RoleSet.from_roles([role("strict", True)], {})
    decision = only_mfa.check_app_access({"env": "dev"}, app_name="grafana")
    assert decision.allowed and decision.mfa_required
    mixed = RoleSet.from_roles([role("strict", True), role("relaxed", False)], {})
    assert not mixed.check_app_access({"env": "dev"}, app_name="grafana").mfa_required
    cluster = mixed.check_app_access({"env": "dev"}, app_name="grafana", cluster_requires_mfa=True)
    assert cluster.allowed and cluster.mfa_required
