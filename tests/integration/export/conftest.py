"""Export integration tests (real receivers on loopback) share the unit layer's builders."""

from __future__ import annotations

import sys
from pathlib import Path

# --import-mode=importlib does not put test directories on sys.path; the tests import exportkit.
sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "export"))
