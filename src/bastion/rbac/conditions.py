"""Evaluating ``where`` conditions for one request: fail closed, explain, evaluate once.

Layer: policy (pure). The caller describes the request in an :class:`AccessContext` (who, from
where, when, with which device and MFA state); the checker asks :meth:`AccessContext.evaluate`
for each role side whose ``where`` it needs. Programs come from
:func:`bastion.types.conditions.compile_condition` (compiled once per expression text).

* **Fail closed.** An evaluation error, a missing trait or label, or a request described without
  a context gives :class:`Outcome` ``holds=None`` with the reason; the checker then refuses an
  allow side and applies a deny side.
* **Evaluated once per request** when the expression does not read ``resource``: the result is
  remembered in the context, so a ``who``/``ls`` sweep over 10,000 nodes evaluates a time or trait
  condition once, not 10,000 times.
* **Time in the cluster's zone.** ``request.time`` is the wall-clock time of the instant given,
  in the zone of the datetime passed (the caller converts with :func:`bastion.clock.in_zone`), so
  ``request.time.getHours()`` is the local hour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bastion.types.conditions import ConditionProgram, compile_condition
from bastion.types.identity import Identity

__all__ = ["AccessContext", "DeviceContext", "Outcome", "source_ip_of"]


def source_ip_of(addr: str) -> str:
    """The IP of ``addr`` (``ip``, ``ip:port``, ``[v6]:port``), as ``request.source_ip``."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(addr))
    except ValueError:
        pass
    host = addr.rsplit(":", 1)[0] if ":" in addr else addr
    host = host.removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """The ``device`` variable: placeholders until device trust lands (all empty)."""

    trusted: bool = False
    attestation: str = ""
    os: str = ""
    compliance: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One condition's result for one request and resource."""

    holds: bool | None
    """True/False as evaluated; ``None`` when it could not be evaluated (fail closed)."""
    reason: str


def _wall_clock(moment: datetime) -> datetime:
    # The engine reads timestamps in UTC; hand it the local wall-clock time labelled UTC so
    # getHours()/getDayOfWeek() answer in the cluster's zone.
    return moment.replace(tzinfo=UTC)


@dataclass(slots=True)
class AccessContext:
    """Everything a condition may read about one request, besides the resource.

    Build one per request (or per ``bctl access`` question) and pass it to the ``check_*``
    methods of :class:`~bastion.rbac.checker.RoleSet`. It remembers resource-independent
    results, so do not share one between requests.
    """

    user: str
    roles: Sequence[str] = ()
    traits: Mapping[str, Sequence[str]] = field(default_factory=dict)
    source_ip: str = ""
    time: datetime | None = None
    """The request time in the cluster's time zone (aware); ``None``: unknown (time conditions
    then fail closed)."""
    mfa_verified: bool = False
    device: DeviceContext = field(default_factory=DeviceContext)
    _memo: dict[str, Outcome] = field(default_factory=dict, repr=False, compare=False)
    _engine: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def for_identity(
        cls, identity: Identity, *, source_ip: str, time: datetime | None
    ) -> AccessContext:
        """A context from a verified certificate identity (its traits, roles and MFA flag)."""
        return cls(
            user=identity.user,
            roles=tuple(identity.roles),
            traits={k: list(v) for k, v in identity.traits.items()},
            source_ip=source_ip,
            time=time,
            mfa_verified=identity.mfa_verified,
            device=DeviceContext(attestation=identity.device_attestation),
        )

    def _context(self) -> Any:
        if self._engine is None:
            request: dict[str, Any] = {
                "source_ip": self.source_ip,
                "mfa_verified": self.mfa_verified,
            }
            if self.time is not None:
                request["time"] = _wall_clock(self.time)
            import cel  # on first use: the package imports its CLI (~0.2 s)

            self._engine = cel.Context(
                {
                    "user": {
                        "name": self.user,
                        "roles": list(self.roles),
                        "traits": {k: list(v) for k, v in self.traits.items()},
                    },
                    "device": {
                        "trusted": self.device.trusted,
                        "attestation": self.device.attestation,
                        "os": self.device.os,
                        "compliance": self.device.compliance,
                    },
                    "request": request,
                }
            )
        return self._engine

    def evaluate(self, source: str, kind: str, name: str, labels: Mapping[str, str]) -> Outcome:
        """Evaluate one ``where`` expression for one resource; never raises.

        Args:
            source: the expression text (compiled once, cached by text).
            kind: ``node``, ``db`` or ``app`` (``resource.kind``).
            name: the resource's name (``resource.name``).
            labels: the resource's labels (``resource.labels``).

        Returns:
            The outcome; ``holds=None`` with the reason when it cannot be evaluated.
        """
        memo = self._memo.get(source)
        if memo is not None:
            return memo
        try:
            program = compile_condition(source)
        except ValueError as exc:  # only for roles stored before a check existed
            return Outcome(None, f"condition is invalid ({exc})")
        outcome = self._run(program, kind, name, labels)
        if not program.uses_resource:
            self._memo[source] = outcome
        return outcome

    def _run(
        self, program: ConditionProgram, kind: str, name: str, labels: Mapping[str, str]
    ) -> Outcome:
        context = self._context()
        try:
            if program.uses_resource:
                resource = {"kind": kind, "name": name, "labels": dict(labels)}
                context.add_variable("resource", resource)
            result = program.program.execute(context)
        except KeyError as exc:
            if str(exc) == "'time'" and self.time is None:
                return Outcome(None, "condition failed: the request time is unknown")
            return Outcome(None, f"condition failed: no such key {exc}")
        except Exception as exc:  # noqa: BLE001 - any engine error fails closed
            text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
            if "time" in text and self.time is None:
                text = "the request time is unknown"
            return Outcome(None, f"condition failed: {text}")
        if not isinstance(result, bool):
            return Outcome(None, f"condition gave {type(result).__name__}, not true/false")
        return Outcome(result, "condition holds" if result else "condition is false")
