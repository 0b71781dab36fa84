"""Device-trust policy (pure): mode aggregation, version comparison, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bastion.rbac.checker import RoleSet
from bastion.rbac.device_trust import (
    DEVICE_REQUIRED_MESSAGE,
    device_refusal,
    effective_device_mode,
    parse_version,
    posture_problems,
    strictest,
    sync_age_problem,
    version_at_least,
)
from bastion.types.access import Role
from bastion.types.devices import (
    DEVICE_TRUST_MODES,
    Compliance,
    Device,
    DeviceCredential,
    DeviceProfile,
    DeviceSpec,
    DeviceTrustPreference,
)
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

modes = st.sampled_from(DEVICE_TRUST_MODES)
maybe_modes = st.one_of(st.none(), modes)
versions = st.lists(st.integers(0, 50), min_size=1, max_size=4).map(
    lambda parts: ".".join(map(str, parts))
)


@given(st.lists(maybe_modes))
def test_strictest_is_order_free_and_an_upper_bound(listed: list[str | None]) -> None:
    got = strictest(listed)  # type: ignore[arg-type]
    assert got == strictest(list(reversed(listed)))  # type: ignore[arg-type]
    rank = DEVICE_TRUST_MODES.index
    assert all(rank(got) >= rank(m) for m in listed if m is not None)
    assert got in listed or got == "off"


@given(modes, st.lists(maybe_modes))
def test_roles_only_tighten_the_cluster(cluster: str, roles: list[str | None]) -> None:
    got = effective_device_mode(cluster, roles)  # type: ignore[arg-type]
    assert DEVICE_TRUST_MODES.index(got) >= DEVICE_TRUST_MODES.index(cluster)  # type: ignore[arg-type]


@given(st.lists(maybe_modes, min_size=1, max_size=4))
def test_role_set_aggregates_the_strictest(listed: list[str | None]) -> None:
    roles = [
        Role(metadata=Metadata(name=f"r{i}"), spec={"options": {"device_trust_mode": m}})
        for i, m in enumerate(listed)
    ]
    got = RoleSet.from_roles(roles, {}).options().device_trust_mode
    assert got == (strictest(listed) if any(m is not None for m in listed) else None)  # type: ignore[arg-type]


@given(versions, versions)
def test_version_order_is_total_and_matches_tuples(a: str, b: str) -> None:
    assert version_at_least(a, b) or version_at_least(b, a)
    pa, pb = parse_version(a), parse_version(b)
    assert pa is not None and pb is not None
    width = max(len(pa), len(pb))
    pad_a, pad_b = pa + (0,) * (width - len(pa)), pb + (0,) * (width - len(pb))
    assert version_at_least(a, b) == (pad_a >= pad_b)


@given(st.text(max_size=20))
def test_parse_version_never_raises(text: str) -> None:
    parse_version(text)


def test_version_examples() -> None:
    assert parse_version("6.1.0-18-amd64") == (6, 1, 0)
    assert version_at_least("13.4.1", "13.4") and not version_at_least("12.7", "13")
    assert not version_at_least("", "1") and not version_at_least("beta", "1")


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _identity(device: str = "", credential: str = "") -> Identity:
    return Identity(
        cluster="c",
        user="alice",
        expires=NOW + timedelta(hours=1),
        device_id=device,
        device_credential_id=credential,
    )


def _device(status: str = "enrolled", attestation: str = "tpm", version: str = "12") -> Device:
    return Device(
        metadata=Metadata(name="d1"),
        spec=DeviceSpec(
            asset_tag="SN1",
            os_type="linux",
            enroll_status=status,  # type: ignore[arg-type]
            credential=DeviceCredential(id="c1", public_key_pem="x", attestation=attestation),  # type: ignore[arg-type]
            profile=DeviceProfile(os_version=version),
            compliance=Compliance(status="unknown"),
        ),
    )


def test_refusals() -> None:
    policy = DeviceTrustPreference(mode="required")
    ok = _identity("d1", "c1")
    assert device_refusal(_identity(), "optional", None, policy, now=NOW) is None
    refused = device_refusal(_identity(), "required", None, policy, now=NOW)
    assert refused is not None and refused.message == DEVICE_REQUIRED_MESSAGE
    assert device_refusal(ok, "required", _device(), policy, now=NOW) is None
    assert device_refusal(ok, "required", _device("revoked"), policy, now=NOW) is not None
    assert (
        device_refusal(_identity("d1", "other"), "required", _device(), policy, now=NOW) is not None
    )
    assert (
        device_refusal(ok, "required", _device(attestation="software"), policy, now=NOW) is not None
    )
    allowed_sw = DeviceTrustPreference(mode="required", allow_software=True)
    assert (
        device_refusal(ok, "required", _device(attestation="software"), allowed_sw, now=NOW) is None
    )
    old = DeviceTrustPreference(mode="required", min_os_version={"linux": "13"})
    found = device_refusal(ok, "required", _device(version="12"), old, now=NOW)
    assert found is not None and "below the minimum 13" in found.message
    strict = DeviceTrustPreference(mode="required", require_compliance=True)
    found = device_refusal(ok, "required", _device(), strict, now=NOW)
    assert found is not None and "unknown" in found.message


def _synced(checkin: datetime | None, seen: datetime | None) -> Device:
    device = _device()
    device.spec.source_checkin, device.spec.source_seen = checkin, seen
    return device


def test_max_sync_age() -> None:
    day = timedelta(days=1)
    policy = DeviceTrustPreference(mode="required", max_sync_age_seconds=7 * 86400)
    ok = _identity("d1", "c1")
    assert device_refusal(ok, "required", _synced(None, NOW - day), policy, now=NOW) is None
    assert device_refusal(ok, "required", _synced(NOW - day, NOW), policy, now=NOW) is None
    # The MDM check-in counts before the sync that reported it.
    stale = device_refusal(ok, "required", _synced(NOW - 9 * day, NOW), policy, now=NOW)
    assert stale is not None and "last saw this device 9d ago (maximum 7d)" in stale.message
    never = device_refusal(ok, "required", _synced(None, None), policy, now=NOW)
    assert never is not None and "no inventory sync has seen this device" in never.message
    # Off (0) or not required: no refusal.
    off = DeviceTrustPreference(mode="required")
    assert device_refusal(ok, "required", _synced(None, None), off, now=NOW) is None
    assert device_refusal(ok, "optional", _synced(None, None), policy, now=NOW) is None
    # A check-in in the future (clock skew of the MDM) is not stale.
    assert not sync_age_problem(_synced(NOW + day, None), 60, NOW)


@given(
    st.integers(0, 365 * 86400),
    st.one_of(st.none(), st.integers(-86400, 400 * 86400)),
    st.one_of(st.none(), st.integers(-86400, 400 * 86400)),
)
def test_sync_age_rule_matches_its_definition(
    max_age: int, checkin_ago: int | None, seen_ago: int | None
) -> None:
    checkin = None if checkin_ago is None else NOW - timedelta(seconds=checkin_ago)
    seen = None if seen_ago is None else NOW - timedelta(seconds=seen_ago)
    device = _synced(checkin, seen)
    problem = sync_age_problem(device, max_age, NOW)
    last = checkin or seen
    if max_age == 0:
        expected = False
    elif last is None:
        expected = True
    else:
        expected = (NOW - last).total_seconds() > max_age
    assert bool(problem) == expected
    policy = DeviceTrustPreference(max_sync_age_seconds=max_age)
    assert (problem in posture_problems(device, policy, now=NOW)) == expected


# ---- require_hardware_key (part 7 groundwork) ---------------------------------------------------


def test_require_hardware_key_is_on_when_any_role_sets_it() -> None:
    from bastion.types.access import RoleOptions, RoleSpec

    plain = Role(metadata=Metadata(name="a"))
    strict = Role(
        metadata=Metadata(name="b"), spec=RoleSpec(options=RoleOptions(require_hardware_key=True))
    )
    assert not RoleSet.from_roles([plain], {}).options().require_hardware_key
    assert RoleSet.from_roles([plain, strict], {}).options().require_hardware_key


def test_hardware_key_refusal() -> None:
    from bastion.rbac.device_trust import (
        HARDWARE_KEY_MESSAGE,
        KeyAttestation,
        hardware_key_refusal,
    )

    tpm = KeyAttestation("d1", "tpm", device_key_sha256="ak", certified_key_sha256="k1")
    assert hardware_key_refusal(False, "anything", None) is None
    assert hardware_key_refusal(True, "k1", tpm) is None  # certified by the AK
    assert hardware_key_refusal(True, "ak", tpm) is None  # the enrolled TPM credential
    for key, attestation, why in [
        ("k1", None, "no hardware key attestation"),
        ("k1", KeyAttestation("", "tpm", certified_key_sha256="k1"), "no hardware key"),
        ("k1", KeyAttestation("d1", "software", "k1", "k1"), "software-attested"),
        ("k2", tpm, "neither the device's TPM credential nor certified"),
        ("", KeyAttestation("d1", "tpm"), "neither"),
    ]:
        refusal = hardware_key_refusal(True, key, attestation)
        assert refusal is not None and why in refusal.reason
        assert refusal.message == HARDWARE_KEY_MESSAGE
        assert "require_hardware_key" in refusal.message and "\n" not in refusal.message


@given(st.booleans(), st.text(max_size=8), st.sampled_from(["tpm", "software", ""]))
def test_hardware_key_allowed_only_for_a_key_a_tpm_vouched_for(
    required: bool, key: str, kind: str
) -> None:
    from bastion.rbac.device_trust import KeyAttestation, hardware_key_refusal

    attestation = KeyAttestation("d1", kind, device_key_sha256="ak", certified_key_sha256="k1")
    allowed = hardware_key_refusal(required, key, attestation) is None
    assert allowed == (not required or (kind == "tpm" and key in ("ak", "k1")))
