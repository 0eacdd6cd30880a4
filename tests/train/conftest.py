"""Trainer tests: the tiny test models of train_helpers.py importable (one thread per test: tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# pytest runs with --import-mode=importlib (test folders are not on sys.path): make the tiny test models
# in train_helpers.py importable by the test modules of this folder
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

