"""docs/interop.md's worked example runs as written (every ```python block that assigns ``res``)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "interop.md"


def test_worked_patching_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    examples = [b for b in blocks if "patching_grid(" in b and "assert" in b]
    assert len(examples) == 1
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scope: dict = {}
        exec(compile(examples[0], str(DOC), "exec"), scope)  # noqa: S102 - our own documentation
    finally:
        torch.set_num_threads(n)
    assert scope["res"].values[1, 6] == 1.0
