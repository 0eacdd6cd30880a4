"""The layering of docs/architecture.md: imports that must never exist (checked on the source, not at run time)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mesaopt"

# (package, forbidden import prefixes): analysis returns data (no checkpoints, no drawing, no experiments);
# train never imports experiments; nothing below the CLI imports the CLI.
FORBIDDEN = [
    ("analysis", ("mesaopt.experiments", "mesaopt.train", "mesaopt.plotting", "matplotlib", "mesaopt.cli")),
    ("train", ("mesaopt.experiments", "mesaopt.cli")),
    ("algorithms", ("mesaopt.models", "mesaopt.train", "mesaopt.experiments", "mesaopt.analysis", "mesaopt.cli")),
    ("tasks", ("mesaopt.models", "mesaopt.train", "mesaopt.experiments", "mesaopt.cli")),
    ("models", ("mesaopt.train", "mesaopt.experiments", "mesaopt.cli")),
]


def _imports(path: Path) -> list[str]:
    """Every module a file imports (absolute names; ``from mesaopt import x`` gives ``mesaopt.x``)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            out.extend(f"{node.module}.{a.name}" for a in node.names)
    return out


@pytest.mark.parametrize("package,forbidden", FORBIDDEN, ids=[p for p, _ in FORBIDDEN])
def test_no_forbidden_imports(package, forbidden):
    bad = [f"{path.relative_to(SRC)} imports {name}" for path in sorted((SRC / package).rglob("*.py"))
           for name in _imports(path) if name.startswith(forbidden)]
    assert not bad, "; ".join(bad)
