"""/proc helpers, read on this test's own process (nothing started)."""

from __future__ import annotations

import os
from pathlib import Path

from bastion.testing.procs import children_running, running


def test_this_process_is_running_and_a_pid_past_the_limit_is_not() -> None:
    assert running(os.getpid())
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert not running(pid_max + 1)


def test_children_are_matched_by_the_module_their_command_line_names() -> None:
    own = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    assert os.getpid() in children_running(os.getppid(), own)  # a whole argument matches
    assert os.getpid() not in children_running(os.getppid(), own[:-1])  # a part does not
    assert os.getpid() not in children_running(os.getpid(), own)  # not its own child
    assert children_running(os.getppid(), "no.such.module") == []
