"""The ``app_service`` section of ``bastion start``: the app agent and the apps it serves.

Layer: ``config`` (pure pydantic). Each entry becomes an ``app`` resource heartbeated by the
agent (:mod:`bastion.agent.app_runner`); the proxy serves HTTP apps at ``NAME.<domain>``
(:func:`app_domain`) and TCP apps through ``bsh proxy app NAME``. docs/app-access.md.
"""

from __future__ import annotations

from pydantic import Field, ValidationError, field_validator, model_validator

from bastion.protocols.addr import parse_addr
from bastion.types.apps import App, AppRewrite, AppSpec
from bastion.types.meta import Metadata, StrictModel

__all__ = ["AppConfig", "AppServiceConfig", "app_cert_names", "app_domain"]


class AppConfig(StrictModel):
    name: str
    """One DNS label: the app is served at ``NAME.<proxy public address>``."""
    uri: str
    """``http://host:port``, ``https://host:port`` or ``tcp://host:port`` as the agent reaches
    it (the proxy does not need to)."""
    public_addr: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    insecure_skip_verify: bool = False
    """``https://`` apps: do not verify the app's certificate (logged)."""
    rewrite: AppRewrite = Field(default_factory=AppRewrite)

    @model_validator(mode="after")
    def _valid(self) -> AppConfig:
        try:
            self.resource("")
        except ValidationError as exc:
            problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise ValueError(f"app {self.name!r}: {problems}") from None
        return self

    def resource(self, host_id: str) -> App:
        """The ``app`` resource this entry announces (bound to the agent's host id)."""
        return App(
            metadata=Metadata(
                name=self.name, labels=dict(self.labels), description=self.description
            ),
            spec=AppSpec(
                uri=self.uri,
                public_addr=self.public_addr,
                rewrite=self.rewrite,
                insecure_skip_verify=self.insecure_skip_verify,
                host_id=host_id,
            ),
        )


class AppServiceConfig(StrictModel):
    """The app agent (``bastion start --roles=app``, or in the all-in-one)."""

    enabled: bool = False
    apps: list[AppConfig] = Field(default_factory=list)
    agent_name: str = ""
    """Default: this host's name."""
    proxy_server: str = ""
    """Proxy to join and tunnel to (an agent on another host); empty = this process's proxy."""
    join_token: str = ""
    """An ``app`` join token (bctl tokens add --type=app)."""
    ca_pin: str = ""

    @field_validator("proxy_server")
    @classmethod
    def _addr(cls, value: str) -> str:
        if value:
            parse_addr(value, 3080)
        return value

    @field_validator("apps")
    @classmethod
    def _unique(cls, value: list[AppConfig]) -> list[AppConfig]:
        names = [a.name for a in value]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"app names must be unique: {', '.join(dup)}")
        return value


def app_domain(public_addr: list[str], listen_addr: str) -> str:
    """The proxy's app domain: apps are ``NAME.<domain>``.

    The host of the first ``proxy_service.public_addr`` (or of the listen address) when it is
    a DNS name; otherwise (an IP address, ``localhost``) ``apps.localhost``: browsers and curl
    resolve ``*.localhost`` to the loopback, and TLS libraries accept the wildcard
    ``*.apps.localhost`` (not ``*.localhost``).
    """
    addr = public_addr[0] if public_addr else listen_addr
    host = parse_addr(addr, 3080)[0].lower().rstrip(".")
    if not host or host == "localhost" or ":" in host or host.replace(".", "").isdigit():
        return "apps.localhost"
    return host


def app_cert_names(domain: str, names: list[str]) -> list[str]:
    """DNS names the proxy's certificate needs for apps under ``domain``: the domain (the
    login pages are reached there), the wildcard (``*.proxy.example.com``; not for one-label
    domains, where TLS libraries refuse wildcards) and each configured app's ``NAME.<domain>``."""
    out = [domain, f"*.{domain}"] if "." in domain else [domain]
    return out + [f"{n}.{domain}" for n in names]
