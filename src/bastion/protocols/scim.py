"""SCIM 2.0 documents (RFC 7643) and PATCH operations (RFC 7644 section 3.5.2), pure.

Layer: protocols (values in, values out). :func:`user_spec_from` / :func:`group_spec_from` turn
a SCIM JSON document into the stored spec, :func:`user_document` / :func:`group_document` turn a
stored resource back into SCIM JSON, and :func:`apply_patch` applies PATCH operations to a
document (``add``, ``replace``, ``remove``; paths ``attr``, ``attr.sub``, ``attr[filter]``; op
names in any case and ``active: "False"`` strings, as Entra ID sends them; Okta's
``remove members`` with a value list). Every malformed input raises
:class:`bastion.types.scim.ScimProblem` with the ``scimType`` to report.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from bastion.protocols.scim_filter import FilterError, matches, parse_filter
from bastion.types.meta import Resource
from bastion.types.scim import (
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    USER_SCHEMA,
    ScimGroup,
    ScimGroupSpec,
    ScimProblem,
    ScimUser,
    ScimUserSpec,
)

__all__ = [
    "apply_patch",
    "etag",
    "group_document",
    "group_spec_from",
    "user_document",
    "user_spec_from",
]

MAX_MEMBERS = 10_000
_FILTERED_PATH = re.compile(r"^([A-Za-z][\w$-]*)\[(.*)\](?:\.([A-Za-z][\w$-]*))?$", re.DOTALL)
_USER_NAME = re.compile(r"^[\w.@+=,-]{1,200}$")


# ---- documents -----------------------------------------------------------------------------------


def _meta(resource: Resource, kind: str, base_url: str, created: Any, modified: Any) -> Any:
    return {
        "resourceType": kind,
        "created": created.isoformat() if created else None,
        "lastModified": modified.isoformat() if modified else None,
        "location": f"{base_url}/{kind}s/{resource.name}",
        "version": etag(resource.metadata.revision),
    }


def etag(revision: str) -> str:
    return f'W/"{revision}"'


def user_document(
    user: ScimUser, groups: list[ScimGroup], base_url: str = "/scim/v2"
) -> dict[str, Any]:
    """The SCIM JSON of a user (``groups`` are the groups it is a member of)."""
    s = user.spec
    doc: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "id": user.name,
        "userName": s.user_name,
        "active": s.active,
        "name": {"givenName": s.given_name, "familyName": s.family_name},
        "displayName": s.display_name,
        "emails": [{"value": e, "primary": i == 0, "type": "work"} for i, e in enumerate(s.emails)],
        "groups": [{"value": g.name, "display": g.spec.display_name} for g in groups],
        "meta": _meta(user, "User", base_url, s.created, s.last_modified),
    }
    if s.external_id:
        doc["externalId"] = s.external_id
    return doc


def group_document(
    group: ScimGroup, users: dict[str, ScimUser], base_url: str = "/scim/v2"
) -> dict[str, Any]:
    """The SCIM JSON of a group (``users`` by id, to show member names)."""
    s = group.spec
    members = []
    for member in s.members:
        user = users.get(member)
        members.append({"value": member, "display": user.spec.user_name if user else ""})
    doc: dict[str, Any] = {
        "schemas": [GROUP_SCHEMA],
        "id": group.name,
        "displayName": s.display_name,
        "members": members,
        "meta": _meta(group, "Group", base_url, s.created, s.last_modified),
    }
    if s.external_id:
        doc["externalId"] = s.external_id
    return doc


def _lookup(doc: dict[str, Any], name: str) -> Any:
    for key, value in doc.items():
        if key.lower() == name.lower():
            return value
    return None


def _text(doc: dict[str, Any], name: str, limit: int = 256) -> str:
    value = _lookup(doc, name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise ScimProblem(f"{name}: expected a string of at most {limit} characters", 400,
                          "invalidValue")  # fmt: skip
    return value


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # Entra ID sends "False"
    raise ScimProblem(f"{name}: expected a boolean", 400, "invalidValue")


def _check_schema(doc: Any, schema: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ScimProblem("the body must be a JSON object", 400, "invalidSyntax")
    schemas = doc.get("schemas")
    if schemas is not None and (not isinstance(schemas, list) or schema not in schemas):
        raise ScimProblem(f"schemas must include {schema}", 400, "invalidValue")
    return doc


def user_spec_from(doc: Any, connector: str) -> ScimUserSpec:
    """The user's spec from its SCIM JSON (create and replace; read-only attributes ignored)."""
    doc = _check_schema(doc, USER_SCHEMA)
    user_name = _text(doc, "userName")
    if not _USER_NAME.match(user_name):
        raise ScimProblem(
            "userName: required; letters, digits and ._@+=,- (at most 200 characters)",
            400,
            "invalidValue",
        )
    name = _lookup(doc, "name") or {}
    if not isinstance(name, dict):
        raise ScimProblem("name: expected an object", 400, "invalidValue")
    emails_doc = _lookup(doc, "emails") or []
    if not isinstance(emails_doc, list):
        raise ScimProblem("emails: expected a list", 400, "invalidValue")
    emails = []
    for item in sorted(
        (e for e in emails_doc if isinstance(e, dict)), key=lambda e: not e.get("primary")
    ):
        value = item.get("value")
        if isinstance(value, str) and value and len(value) <= 256:
            emails.append(value)
    active = _lookup(doc, "active")
    return ScimUserSpec(
        connector=connector,
        user_name=user_name,
        external_id=_text(doc, "externalId"),
        display_name=_text(doc, "displayName"),
        given_name=_text(name, "givenName"),
        family_name=_text(name, "familyName"),
        emails=emails[:20],
        active=True if active is None else _bool(active, "active"),
    )


def group_spec_from(doc: Any, connector: str) -> ScimGroupSpec:
    """The group's spec from its SCIM JSON (members by ``value``, the user id)."""
    doc = _check_schema(doc, GROUP_SCHEMA)
    display = _text(doc, "displayName")
    if not display:
        raise ScimProblem("displayName: required", 400, "invalidValue")
    members_doc = _lookup(doc, "members") or []
    if not isinstance(members_doc, list) or len(members_doc) > MAX_MEMBERS:
        raise ScimProblem(f"members: expected a list of at most {MAX_MEMBERS}", 400,
                          "invalidValue")  # fmt: skip
    members: list[str] = []
    for item in members_doc:
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(value, str) or not value:
            raise ScimProblem("members: each member needs a value (user id)", 400, "invalidValue")
        if value not in members:
            members.append(value)
    return ScimGroupSpec(
        connector=connector,
        display_name=display,
        external_id=_text(doc, "externalId"),
        members=members,
    )


# ---- PATCH ---------------------------------------------------------------------------------------


def _key(doc: dict[str, Any], name: str) -> str:
    """The document's own spelling of attribute ``name`` (names are case-insensitive)."""
    for key in doc:
        if key.lower() == name.lower():
            return key
    return name


def _merge(doc: dict[str, Any], name: str, value: Any, op: str) -> None:
    key = _key(doc, name)
    current = doc.get(key)
    if op == "add" and isinstance(current, list):
        additions = value if isinstance(value, list) else [value]
        doc[key] = current + [v for v in additions if v not in current]
    elif op == "add" and isinstance(current, dict) and isinstance(value, dict):
        current.update(value)
    else:
        doc[key] = value


def _filtered(doc: dict[str, Any], path: str, op: str, value: Any) -> None:
    m = _FILTERED_PATH.match(path)
    assert m is not None
    name, text, sub = m.group(1), m.group(2), m.group(3)
    try:
        selector = parse_filter(text)
    except FilterError as exc:
        raise ScimProblem(f"path {path!r}: {exc}", 400, "invalidPath") from None
    items = doc.get(_key(doc, name))
    if not isinstance(items, list):
        if op == "remove":
            return
        raise ScimProblem(f"path {path!r}: no such multi-valued attribute", 400, "noTarget")
    kept = []
    for item in items:
        hit = isinstance(item, dict) and matches(selector, item)
        if hit and op == "remove" and not sub:
            continue
        if hit and sub:
            if op == "remove":
                item.pop(_key(item, sub), None)
            else:
                item[_key(item, sub)] = value
        elif hit and op != "remove":
            if isinstance(value, dict):
                item.update(value)
        kept.append(item)
    doc[_key(doc, name)] = kept


def _one(doc: dict[str, Any], raw: Any) -> None:
    if not isinstance(raw, dict):
        raise ScimProblem("each operation must be an object", 400, "invalidSyntax")
    op = str(raw.get("op", "")).lower()
    path = raw.get("path")
    value = raw.get("value")
    if op not in ("add", "replace", "remove"):
        raise ScimProblem(f"op {raw.get('op')!r}: use add, replace or remove", 400,
                          "invalidSyntax")  # fmt: skip
    if path is not None and (not isinstance(path, str) or not path or len(path) > 512):
        raise ScimProblem("path: expected a non-empty string", 400, "invalidPath")
    if path is None:
        if op == "remove":
            raise ScimProblem("remove needs a path", 400, "noTarget")
        if not isinstance(value, dict):
            raise ScimProblem("an operation without a path needs an object value", 400,
                              "invalidValue")  # fmt: skip
        for name, item in value.items():
            if "." in name and not name.lower().startswith("urn:"):
                head, _, sub = name.partition(".")
                inner = doc.setdefault(_key(doc, head), {})
                if isinstance(inner, dict):
                    inner[_key(inner, sub)] = item
            else:
                _merge(doc, name, item, op)
        return
    if path.lower().startswith("urn:"):
        path = path.rsplit(":", 1)[-1]
    if "[" in path:
        if not _FILTERED_PATH.match(path):
            raise ScimProblem(f"path {path!r} is not supported", 400, "invalidPath")
        _filtered(doc, path, op, value)
        return
    if not re.fullmatch(r"[A-Za-z][\w$-]*(\.[A-Za-z][\w$-]*)?", path):
        raise ScimProblem(f"path {path!r} is not supported", 400, "invalidPath")
    head, _, sub = path.partition(".")
    target = doc
    if sub:
        inner = doc.setdefault(_key(doc, head), {})
        if not isinstance(inner, dict):
            raise ScimProblem(f"path {path!r}: {head} is not an object", 400, "invalidPath")
        target, head = inner, sub
    if op == "remove":
        current = target.get(_key(target, head))
        if isinstance(current, list) and isinstance(value, list):  # Okta: remove these members
            drop = [v.get("value") if isinstance(v, dict) else v for v in value]
            target[_key(target, head)] = [
                v for v in current if (v.get("value") if isinstance(v, dict) else v) not in drop
            ]
        else:
            target.pop(_key(target, head), None)
        return
    _merge(target, head, value, op)


def apply_patch(doc: dict[str, Any], body: Any) -> dict[str, Any]:
    """A new document: ``doc`` with the PatchOp ``body``'s operations applied in order.

    Raises:
        ScimProblem: a malformed body or operation (nothing is applied).
    """
    body = _check_schema(body, PATCH_SCHEMA)
    ops = _lookup(body, "Operations")
    if not isinstance(ops, list) or not ops or len(ops) > 1000:
        raise ScimProblem("Operations: expected 1 to 1000 operations", 400, "invalidSyntax")
    out = copy.deepcopy(doc)
    for raw in ops:
        _one(out, raw)
    return out
