import sys

import pytest

from bastion.cli import bsh_main


def test_fast_path_errors_cleanly_without_a_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BSH_HOME", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["bsh", "proxy", "ssh", "root@web1:22"])
    with pytest.raises(SystemExit) as info:
        bsh_main.main()
    assert info.value.code == 4
    assert "not logged in" in capsys.readouterr().err
