"""Selector regexes in Z3 agree with Python's fullmatch, or are refused."""

from __future__ import annotations

import re

import pytest
import z3
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.rbac.solver.regex import Unsupported, to_z3

PATTERNS = ["^web-[0-9]+$", "^(eu|us)-.*$", "^a$|^b$", "^[^a-c]{2,3}?$", "^x?y*z+$", "^a.b$"]


@settings(max_examples=60, deadline=None)
@given(pattern=st.sampled_from(PATTERNS), text=st.text(alphabet="abcxyz-webu0129\n.", max_size=6))
def test_same_language_as_fullmatch(pattern: str, text: str) -> None:
    solver = z3.Solver()
    solver.add(z3.InRe(z3.StringVal(text), to_z3(pattern)))
    assert (solver.check() == z3.sat) == bool(re.fullmatch(pattern, text))


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("^(a)\\1$", "groupref"),
        ("^a(?=b)$", "assert"),
        ("^x\\b$", "anchor"),
        ("^\\d$", "CATEGORY"),
        ("^(?i:a)$", "flags"),
        ("^a^b$", "anchor"),
    ],
)
def test_refused(pattern: str, why: str) -> None:
    with pytest.raises(Unsupported, match=re.escape(why)):
        to_z3(pattern)
