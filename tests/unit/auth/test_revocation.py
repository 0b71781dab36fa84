"""User epochs and revocation locks (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bastion.auth.revocation import (
    CLOCK_SKEW,
    longest_certificate_ttl,
    narrows,
    new_epoch,
    revocation_lock,
)
from bastion.locks.matcher import LockView, decide, identity_targets
from bastion.rbac.builtin import BUILTIN_ROLES
from bastion.types.access import User, UserSpec
from bastion.types.identity import Identity
from bastion.types.meta import Metadata

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def spec(roles: list[str], **traits: list[str]) -> UserSpec:
    return UserSpec(roles=roles, traits=dict(traits))


def test_epochs_are_fresh_and_unguessable() -> None:
    epochs = {new_epoch() for _ in range(100)}
    assert len(epochs) == 100 and all(len(e) == 32 for e in epochs)


def test_removing_a_role_or_a_trait_value_narrows_adding_does_not() -> None:
    old = spec(["access", "dev"], logins=["root", "alice"])
    assert narrows(old, spec(["access"], logins=["root", "alice"]))
    assert narrows(old, spec(["access", "dev"], logins=["alice"]))
    assert narrows(old, spec(["access", "dev"]))
    assert not narrows(old, spec(["access", "dev", "ops"], logins=["root", "alice", "bob"]))
    assert not narrows(old, old)


def test_the_revocation_lock_matches_the_old_epoch_only_and_outlives_its_certificates() -> None:
    user = User(metadata=Metadata(name="alice"), spec=UserSpec(roles=["access"], epoch="e1" * 8))
    ttl = longest_certificate_ttl(BUILTIN_ROLES.values())
    lock = revocation_lock(user, "reset", "admin", NOW, ttl)
    assert lock is not None and lock.metadata.expires == NOW + ttl + CLOCK_SKEW
    view = LockView((lock,), True, NOW)

    def cert(epoch: str) -> Identity:
        return Identity(cluster="c", user="alice", expires=NOW, user_epoch=epoch)

    assert not decide(view, identity_targets(cert("e1" * 8)), "best_effort", NOW).allowed
    assert decide(view, identity_targets(cert("new")), "best_effort", NOW).allowed
    assert "log in again" in lock.spec.message


def test_a_user_without_an_epoch_gets_no_lock_that_would_block_new_certificates() -> None:
    legacy = User(metadata=Metadata(name="bob"), spec=UserSpec(roles=["access"]))
    assert revocation_lock(legacy, "deletion", "admin", NOW, timedelta(hours=1)) is None
