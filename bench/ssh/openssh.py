"""The OpenSSH peers of the SSH benchmark: a target sshd, a second sshd acting as the bastion
(``ProxyJump``), a client key, and one ``ssh_config`` with host aliases ``direct`` (straight to
the target) and ``viajump`` (through the bastion sshd). Host keys are pinned in a known_hosts
file (no ``StrictHostKeyChecking no``), so the baseline does the same checks as our path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bastion.testing.peers.sshd import SshdServer, generate_key, local_login, start_sshd

SSHD_EXTRA = {"MaxStartups": "1000:30:1000", "MaxSessions": "100"}


@dataclass
class OpenSSHPeers:
    target: SshdServer
    jump: SshdServer
    config: Path
    sshds: list[SshdServer] = field(default_factory=list)

    def argv(self, alias: str) -> list[str]:
        """``ssh`` arguments up to (and including) the destination; append the command."""
        return ["ssh", "-F", str(self.config), alias]

    def stop(self) -> None:
        for sshd in self.sshds:
            sshd.stop()


def start_peers(work: Path) -> OpenSSHPeers:
    work.mkdir(parents=True, exist_ok=True)
    key = work / "client_key"
    pub = generate_key(key, "bench-client")
    sshds: list[SshdServer] = []
    try:
        target = start_sshd(work, authorized_keys=pub, extra=SSHD_EXTRA)
        sshds.append(target)
        jump = start_sshd(work, authorized_keys=pub, extra=SSHD_EXTRA)
        sshds.append(jump)
    except BaseException:
        for sshd in sshds:
            sshd.stop()
        raise
    known_hosts = work / "known_hosts"
    known_hosts.write_text(f"{target.known_hosts_line()}\n{jump.known_hosts_line()}\n")
    config = work / "ssh_config"
    config.write_text(
        f"Host direct\n  HostName 127.0.0.1\n  Port {target.port}\n"
        f"Host jumpbox\n  HostName 127.0.0.1\n  Port {jump.port}\n"
        f"Host viajump\n  HostName 127.0.0.1\n  Port {target.port}\n  ProxyJump jumpbox\n"
        f"Host *\n  User {local_login()}\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
        "  ControlMaster no\n  ControlPath none\n  LogLevel ERROR\n"
    )
    return OpenSSHPeers(target, jump, config, sshds)
