"""Layers read top-down: adapters/ (the contract) imports no other package of the project; serve/ never imports train/."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = {"adapters", "train", "serve", "loadtest", "kidsart"}


def _imported_packages(package: str) -> dict[str, set[str]]:
    """{module path: top-level project packages it imports} for every module under `package`."""
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names & PROJECT_PACKAGES
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("adapters", PROJECT_PACKAGES - {"adapters"}), ("serve", {"train"})])
def test_package_does_not_import(package, forbidden):
    offenders = {module: sorted(names & forbidden) for module, names in _imported_packages(package).items() if names & forbidden}
    assert not offenders, f"{package}/ must not import {sorted(forbidden)}: {offenders}"
