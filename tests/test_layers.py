"""The import rules of ARCHITECTURE.md, read from every module's import statements (AST, nothing imported)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROJECT = ("adapters", "serve", "train", "loadtest", "kidsart")
# Where vLLM runs in-process, besides its plugin (serve/vllm_plugin/, loaded by vLLM itself): the engine replica
# (serve/engine_server.py, AsyncLLM), the engine arguments (serve/engine.py, vLLM's own parser) and the bench's
# offline engine phase (vllm.LLM).
ENGINE_SIDE = {"serve/engine_server.py", "serve/engine.py"}
IN_PROCESS_VLLM = ENGINE_SIDE | {"loadtest/offline_engine.py"}
ROUTER = ("serve/router.py", "serve/scoring.py")  # the router replicas: never vLLM, not even through another module


def _imports(path: Path) -> set[str]:
    """Top-level package names this module imports (at any depth, lazily or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _module_level_imports(path: Path) -> set[str]:
    """Top-level package names imported when the module itself is imported (not inside a function)."""
    names, pending = set(), list(ast.parse(path.read_text(encoding="utf-8")).body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # runs only when called
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        pending.extend(ast.iter_child_nodes(node))
    return names


def _project_imports(path: Path) -> set[Path]:
    """The project's module files this module imports (at any depth, lazily or not)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            dotted = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]  # `from serve import x`
        else:
            continue
        for name in dotted:
            if name.split(".")[0] in PROJECT:
                base = REPO.joinpath(*name.split("."))
                found.update(p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file())
    return found


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("adapters", {"serve", "train", "loadtest", "kidsart"}),
        ("serve", {"train", "loadtest", "kidsart"}),
        ("train", {"loadtest", "kidsart"}),
    ],
)
def test_packages_import_only_what_the_architecture_allows(package, forbidden):
    offending = {str(p.relative_to(REPO)): sorted(_imports(p) & forbidden) for p in _modules(package)}
    assert not {k: v for k, v in offending.items() if v}


def _project_modules_imported(path: Path) -> set[str]:
    """Dotted project modules a module imports (`from serve import cli` counts as `serve.cli`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            if top in PROJECT and "." not in node.module:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return {n for n in names if n.split(".")[0] in PROJECT}


# What loadtest/ may take from train/ (its inputs: drawings, districts, untrained adapters for the bench base)
LOADTEST_FROM_TRAIN = {"train.synth", "train.district", "train.init_adapters"}
# The demo script (kidsart/demo.py) drives the parts through their public entry points
DEMO_IMPORTS = {
    "adapters.base_builder",
    "adapters.profiles",
    "serve.client",
    "serve.district.job",
    "serve.stack",
    "train.district",
    "train.synth",
}


def test_loadtest_takes_only_its_inputs_from_train_and_never_imports_the_command():
    offending = {}
    for path in _modules("loadtest"):
        used = _project_modules_imported(path)
        bad = {m for m in used if m.startswith("kidsart") or (m.startswith("train") and m not in LOADTEST_FROM_TRAIN)}
        if bad:
            offending[str(path.relative_to(REPO))] = sorted(bad)
    assert not offending, f"loadtest/ may import train/ only for {sorted(LOADTEST_FROM_TRAIN)}: {offending}"


def test_the_command_imports_only_each_packages_cli_and_the_demo_only_its_entry_points():
    cli = _project_modules_imported(REPO / "kidsart/cli.py") - {"kidsart.commands", "kidsart.demo"}
    assert all(m.endswith(".cli") for m in cli), f"kidsart/cli.py imports {sorted(cli)}: only each package's cli"
    demo = _project_modules_imported(REPO / "kidsart/demo.py")
    assert demo <= DEMO_IMPORTS, f"kidsart/demo.py imports {sorted(demo - DEMO_IMPORTS)} beyond its entry points"
    others = {
        str(p.relative_to(REPO)): sorted(
            _project_modules_imported(p) - {"kidsart.demo", "kidsart.commands", "kidsart.loop_study"}
        )
        for p in _modules("kidsart")
        if p.name not in ("cli.py", "demo.py")
    }
    assert not {k: v for k, v in others.items() if v}, others


def test_vllm_runs_in_process_only_in_the_engine_replica_the_plugin_and_the_offline_bench_phase():
    users = {str(p.relative_to(REPO)) for package in PROJECT for p in _modules(package) if "vllm" in _imports(p)}
    plugin = {u for u in users if u.startswith("serve/vllm_plugin/")}
    assert users - plugin == IN_PROCESS_VLLM, (
        "vLLM may be imported only by serve/vllm_plugin/, the engine replica (serve/engine_server.py), the engine "
        "arguments (serve/engine.py) and the bench's offline engine (loadtest/offline_engine.py); "
        f"found {sorted(users - plugin)}"
    )


def test_the_engine_side_imports_vllm_lazily():
    """The driver deploys the engine and builds its arguments without loading vLLM (only the replica does)."""
    eager = sorted(m for m in ENGINE_SIDE if "vllm" in _module_level_imports(REPO / m))
    assert not eager, f"{eager} import vllm at module level; import it inside the functions that use it"


def test_the_router_never_imports_vllm_even_through_another_module():
    reached, pending = set(), [REPO / m for m in ROUTER]
    while pending:
        path = pending.pop()
        if path not in reached:
            reached.add(path)
            pending.extend(_project_imports(path))
    assert {REPO / "serve/scoring.py", REPO / "serve/errors.py", REPO / "adapters/rail.py"} <= reached  # followed
    vllm_users = sorted(str(p.relative_to(REPO)) for p in reached if "vllm" in _imports(p) or "vllm_plugin" in str(p))
    assert not vllm_users, f"the router modules {ROUTER} reach vLLM through {vllm_users}; they must never import it"
