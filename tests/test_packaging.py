"""Packaging: the LICENSE matches pyproject's license, py.typed ships, the metadata a user sees is there."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_license_file_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_py_typed_ships_as_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (ROOT / "src" / "mesaopt" / "py.typed").is_file()
    assert "py.typed" in data["tool"]["setuptools"]["package-data"]["mesaopt"]
    assert "Typing :: Typed" in data["project"]["classifiers"]
    assert not [c for c in data["project"]["classifiers"] if c.startswith("License ::")]  # PEP 639: expression only
