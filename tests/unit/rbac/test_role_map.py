"""Role mapping at the trust boundary (bastion.rbac.role_map): no mapping, no access; patterns
anchored; $N expansion cannot produce anything but a plain role name."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bastion.rbac.role_map import map_roles, remote_device_refusal
from bastion.types.devices import DeviceTrustPreference
from bastion.types.identity import Identity
from bastion.types.meta import NAME_PATTERN
from bastion.types.trust import RoleMapping, TrustedClusterSpec

ROLE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
ANY_TEXT = st.text(min_size=0, max_size=30)


def test_example_from_the_issue() -> None:
    role_map = [
        RoleMapping(remote="^admin$", local=["access"]),
        RoleMapping(remote="dev-(.*)", local=["dev-$1"]),
    ]
    assert map_roles(role_map, ["admin"]) == ["access"]
    assert map_roles(role_map, ["dev-web", "dev-db"]) == ["dev-db", "dev-web"]
    assert map_roles(role_map, ["mydev-web", "admins", "editor"]) == []


@given(st.lists(ROLE, max_size=5))
def test_no_mapping_means_no_roles(roles: list[str]) -> None:
    assert map_roles([], roles) == []


@given(ROLE, ROLE, ROLE)
def test_patterns_are_anchored(role: str, prefix: str, suffix: str) -> None:
    """A literal pattern grants only for exactly that role, never a longer one."""
    mapping = [RoleMapping(remote=re.escape(role), local=["granted"])]
    assert map_roles(mapping, [role]) == ["granted"]
    assert map_roles(mapping, [prefix + role + suffix]) == (
        ["granted"] if prefix + role + suffix == role else []
    )


@given(st.lists(ANY_TEXT, max_size=5))
def test_expansion_cannot_inject(roles: list[str]) -> None:
    """Whatever the remote role names (slashes, spaces, globs, newlines), every granted role is
    a plain role name, and no captured text adds a second role."""
    mapping = [RoleMapping(remote="(.*)", local=["leaf-$1"])]
    granted = map_roles(mapping, roles)
    assert all(NAME_PATTERN.match(name) for name in granted)
    assert len(granted) <= len(set(roles))
    for name in granted:
        assert name.startswith("leaf-") and name[5:] in roles
    assert "*" not in "".join(granted)


@given(ANY_TEXT)
def test_capture_is_what_matched(text: str) -> None:
    mapping = [RoleMapping(remote="team-([a-z]+)", local=["$1-ops"])]
    expected = [f"{text[5:]}-ops"] if re.fullmatch("team-([a-z]+)", text) else []
    assert map_roles(mapping, [text]) == expected


def test_unknown_group_and_empty_result() -> None:
    mapping = [RoleMapping(remote="x(.*)", local=["$1", "r$2"])]
    assert map_roles(mapping, ["x"]) == ["r"]  # "$1" empty: dropped; "$2" unknown: empty


@pytest.mark.parametrize(
    ("remote", "local"),
    [("(", ["a"]), ("", ["a"]), ("a", []), ("a", ["*"]), ("a", ["a/b"]), ("a", ["$x"])],
)
def test_bad_mappings_refused(remote: str, local: list[str]) -> None:
    with pytest.raises(ValidationError):
        RoleMapping(remote=remote, local=local)


def test_spec_needs_a_proxy_address() -> None:
    with pytest.raises(ValidationError):
        TrustedClusterSpec(proxy_addr="root.example")
    assert TrustedClusterSpec(proxy_addr="root.example:3080").enabled


def _remote(**fields: object) -> Identity:
    base = Identity(
        cluster="leaf.test",
        user="root.test/alice",
        expires=datetime(2030, 1, 1, tzinfo=UTC),
        origin_cluster="root.test",
    )
    return base.model_copy(update=fields)


def test_root_attested_devices_at_the_leaf() -> None:
    strict = DeviceTrustPreference(mode="required", allow_software=False)
    lenient = DeviceTrustPreference(mode="required", allow_software=True)
    none = remote_device_refusal(_remote(), lenient)
    assert none is not None and "root.test" in none.message
    tpm = _remote(device_id="d1", device_attestation="tpm")
    assert remote_device_refusal(tpm, strict) is None
    soft = _remote(device_id="d1", device_attestation="software")
    assert remote_device_refusal(soft, lenient) is None
    refused = remote_device_refusal(soft, strict)
    assert refused is not None and "TPM" in refused.message
