"""bsh ssh's OpenSSH hand-off: OpenSSH-like argument parsing and the ssh command line (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.cli.ssh_handoff import (
    CIPHERS,
    SSHArgs,
    SSHUsageError,
    builtin_options,
    main,
    parse_ssh_args,
    read_ssh_args,
    ssh_argv,
)


def test_parses_like_openssh() -> None:
    args = parse_ssh_args(["-p2222", "-l", "root", "-tA", "-o", "ServerAliveInterval=5", "web1",
                           "ls", "-la"])  # fmt: skip
    assert args is not None
    assert (args.port, args.login, args.tty, args.agent) == (2222, "root", True, True)
    assert args.options == ["ServerAliveInterval=5"]
    assert (args.destination, args.command) == ("web1", ["ls", "-la"])
    args = parse_ssh_args(["-L", "8080:db:5432", "-R", "9000:localhost:9000", "-N", "--", "web1"])
    assert args is not None and args.local == ["8080:db:5432"] and args.no_command
    assert args.remote == ["9000:localhost:9000"] and args.destination == "web1"
    ends = parse_ssh_args(["--", "-weird-node", "true"])
    assert ends is not None and ends.destination == "-weird-node"


@pytest.mark.parametrize("argv", [[], ["--help"], ["-x", "web1"], ["-p"], ["-p", "x", "n"], ["-l"]])
def test_anything_else_goes_to_the_full_cli(argv: list[str]) -> None:
    assert parse_ssh_args(argv) is None


def test_ssh_argv_trusts_only_the_cluster_and_keeps_user_flags() -> None:
    args = SSHArgs(destination="web1", command=["uptime"], port=22, local=["1:h:2"], tty=True)
    argv = ssh_argv("/usr/bin/ssh", "/v/bsh", Path("/p"), "c.example", "web1", "root", args)
    assert argv[:3] == ["/usr/bin/ssh", "-F", "none"]
    text = " ".join(argv)
    assert "ProxyCommand=/v/bsh proxy ssh --cluster=c.example %r@%h:%p" in text
    assert "StrictHostKeyChecking=yes" in text and "UserKnownHostsFile=/p/known_hosts" in text
    assert "-L 1:h:2" in text and "-t" in argv and "-l root" in text
    assert argv[-3:] == ["--", "web1.c.example", "uptime"]
    # AES-GCM first (the node decrypts it twice as fast), unless the user names ciphers
    assert "Ciphers=aes128-gcm@openssh.com," in text
    mine = SSHArgs(destination="web1", options=["Ciphers=aes256-ctr"])
    argv = ssh_argv("/usr/bin/ssh", "/v/bsh", Path("/p"), "c", "web1", "root", mine)
    assert argv.index("Ciphers=aes256-ctr") < argv.index(f"Ciphers={CIPHERS}")
    # a TPM-held key (bsh login --key-store=tpm): the public key names it, bsh's agent signs
    agent = ssh_argv("/usr/bin/ssh", "/v/bsh", Path("/p"), "c", "w", "r", mine, agent="/t/s")
    assert "IdentityFile=/p/key.pub" in agent and "IdentityAgent=/t/s" in agent


def test_steps_aside_for_selectors_and_forced_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["ls"]) is None
    assert main(["ssh", "env=prod", "true"]) is None
    monkeypatch.setenv("BSH_SSH_CLIENT", "builtin")
    assert main(["ssh", "web1", "true"]) is None


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["-x", "web1"], "unknown option -x"),
        (["--port", "22", "web1"], "unknown option --port"),
        (["-l"], "-l needs a value"),
        (["-p", "x", "web1"], "not a port number"),
        ([], "name the node"),
        (["-A"], "name the node"),
    ],
)
def test_read_ssh_args_says_what_is_wrong(argv: list[str], says: str) -> None:
    with pytest.raises(SSHUsageError, match=says):
        read_ssh_args(argv)


def test_builtin_options_are_interpreted_case_insensitively_first_wins() -> None:
    opts = builtin_options(
        [
            "port=2222",
            "Port=3333",
            "User root",
            "ServerAliveInterval=15",
            "ServerAliveCountMax=2",
            "ConnectTimeout=5",
            "RequestTTY=no",
            "ForwardAgent=yes",
            "LocalForward=8080 db:5432",
            "RemoteForward 9000 localhost:9000",
            "SetEnv=LANG=C",
            "LogLevel=ERROR",
        ]
    )
    assert (opts.port, opts.login, opts.tty, opts.agent) == (2222, "root", False, True)
    assert (opts.keepalive_interval, opts.keepalive_count_max, opts.connect_timeout) == (15, 2, 5)
    assert opts.local == ["8080:db:5432"] and opts.remote == ["9000:localhost:9000"]
    assert opts.env == {"LANG": "C"}


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("StrictHostKeyChecking=no", "trusts only the cluster's host CA"),
        ("ProxyJump=evil", "trusts only the cluster's host CA"),
        ("Ciphers=aes128-ctr", "not supported by bsh's built-in SSH client"),
        ("Port=abc", "expected a number"),
        ("ForwardAgent=maybe", "expected yes or no"),
        ("Port", "expected Option=value"),
    ],
)
def test_builtin_options_refuse_clearly(option: str, says: str) -> None:
    with pytest.raises(SSHUsageError, match=says):
        builtin_options([option])
