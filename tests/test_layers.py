"""The import rules of ARCHITECTURE.md, read from every module's import statements (AST, nothing imported)."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = ("adapters", "serve", "train", "loadtest", "kidsart")
IN_PROCESS_VLLM = {"loadtest/bench_worker.py", "loadtest/profile_engine.py"}  # the offline engine phase


def _imports(path: Path) -> set[str]:
    """Top-level package names this module imports (at any depth, lazily or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package, forbidden", [
    ("adapters", {"serve", "train", "loadtest", "kidsart"}),
    ("serve", {"train", "loadtest", "kidsart"}),
    ("train", {"loadtest", "kidsart"}),
])
def test_packages_import_only_what_the_architecture_allows(package, forbidden):
    offending = {str(p.relative_to(REPO)): sorted(_imports(p) & forbidden) for p in _modules(package)}
    assert not {k: v for k, v in offending.items() if v}


def test_vllm_runs_in_process_only_in_the_engine_plugin_and_the_offline_bench_phase():
    users = {str(p.relative_to(REPO)) for package in PROJECT for p in _modules(package) if "vllm" in _imports(p)}
    plugin = {u for u in users if u.startswith("serve/vllm_plugin/")}
    assert users - plugin == IN_PROCESS_VLLM
