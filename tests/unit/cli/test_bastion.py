from pathlib import Path

import pytest

from bastion.cli.bastion import _print_next_steps, address_in_use, lock_data_dir
from bastion.process import Ready


def ready(second_factor: str) -> Ready:
    return Ready(
        cluster="c",
        data_dir=Path("/tmp/d"),
        ca_pin="sha256:00",
        auth_addr=("127.0.0.1", 3025),
        proxy_addr=("127.0.0.1", 3080),
        second_factor=second_factor,
    )


@pytest.mark.parametrize("mode", ["off", "optional"])
def test_password_only_clusters_get_a_loud_warning(capsys, mode):
    _print_next_steps(ready(mode))
    out, err = capsys.readouterr()
    assert "WARNING" in err and f"second_factor is {mode}" in err
    assert f"second_factor is {mode}" in out


def test_default_cluster_has_no_warning_and_explains_the_second_factor(capsys):
    _print_next_steps(ready("on"))
    out, err = capsys.readouterr()
    assert "WARNING" not in out + err
    assert "--mfa=webauthn" in out


@pytest.mark.parametrize(
    ("mode", "says", "never"),
    [
        ("webauthn", "register your security key", "TOTP"),
        ("otp", "register a TOTP app", "--mfa=webauthn"),
        ("off", "set a password:", "second factor,"),
    ],
)
def test_invite_step_says_what_this_cluster_registers(capsys, mode, says, never):
    _print_next_steps(ready(mode))
    out = capsys.readouterr().out
    step = out.split("2. Accept the invite:")[1].split("\n  3. ")[0]
    assert says in step and never not in step and "--invite=TOKEN" in step
    assert ("--mfa=webauthn" in step) == (mode == "webauthn")


def test_address_in_use_names_the_address_and_the_way_out() -> None:
    exc = OSError(
        98, "error while attempting to bind on address ('127.0.0.1', 3080): address already in use"
    )
    message = address_in_use(exc)
    assert "127.0.0.1:3080" in message and "--proxy-addr" in message and "--auth-addr" in message
    assert "cannot listen on:" not in message
    assert address_in_use(OSError(98, "in use")).startswith("cannot listen on: the address")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auth-addr", "bogus:port"], "error: --auth-addr: invalid address 'bogus:port'"),
        (["--proxy-addr", "h:99999"], "error: --proxy-addr: invalid address 'h:99999'"),
        (["--node-name", "bad name"], "error: --node-name: invalid node name 'bad name'"),
    ],
)
def test_bad_start_flags_name_the_flag_and_start_nothing(tmp_path, args, message):
    from click.testing import CliRunner

    from bastion.cli.bastion import main

    data = tmp_path / "data"
    result = CliRunner().invoke(main, ["start", "--data-dir", str(data), *args])
    assert result.exit_code == 2
    assert message in result.output and "validation error" not in result.output
    assert not data.exists()


def test_one_daemon_per_data_dir(tmp_path):
    import os

    from bastion.errors import BadParameter

    first = lock_data_dir(tmp_path / "data")
    try:
        with pytest.raises(BadParameter, match="another bastion is running with the data dir"):
            lock_data_dir(tmp_path / "data")
        other = lock_data_dir(tmp_path / "other")  # another data dir is fine
        os.close(other)
    finally:
        os.close(first)
    os.close(lock_data_dir(tmp_path / "data"))  # free again once the first one is gone
