"""The package installs like one: a wheel built from this checkout, installed with --no-deps into a fresh
virtual environment that sees the already-installed pinned dependencies, works from another directory
with nothing but what the wheel ships (rubrics, prompt formats, profiles, training configs, the tiny base
and its adapters)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # `make test-unit` leaves it out; `make test` runs it

REPO = Path(__file__).resolve().parent.parent


def _run(command: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the new environment's bin folder, a working directory outside the checkout, its environment)."""
    root = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools builds in the source tree (build/, *.egg-info), which stays untouched
    source = root / "source"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "runs", "artifacts", "build", "out", "*.egg-info", "__pycache__", ".pytest_cache"
        ),
    )
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(root / "dist"),
            str(source),
        ],
        cwd=root,
    )
    (wheel,) = (root / "dist").glob("kidsart-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    new_site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # the pinned dependencies already installed here, appended after the new site-packages; a plain path
    # line (not site.addsitedir), so this checkout's editable install is not picked up with them
    (new_site / "pinned-deps.pth").write_text(sysconfig.get_path("purelib") + "\n", encoding="utf-8")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        cwd=root,
    )
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KIDSART_HOME")}
    env["KIDSART_HOME"] = str(root / "home")
    return {"bin": venv / "bin", "cwd": elsewhere, "env": env, "wheel": wheel, "site": new_site}


def test_the_wheel_ships_the_data_a_profile_needs(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for expected in (
        "adapters/rubrics/kidsartbench.yaml",
        "adapters/prompt_formats/kidsart.yaml",
        "adapters/profiles/tiny.yaml",
        "adapters/deployments/tiny.yaml",
        "train/configs/tiny.yaml",
        "adapters/bases/tiny/config.json",
        "adapters/trained/tiny/realism/adapter_config.json",
        "adapters/trained/tiny/feedback/manifest.yaml",
        "loadtest/locustfile.py",
        "serve/district/templates/report.html.j2",
    ):
        assert expected in names, expected
    assert not any(name.startswith("tests/") for name in names)


def test_kidsart_runs_from_another_directory_on_the_installed_package(installed):
    python, kidsart = str(installed["bin"] / "python"), str(installed["bin"] / "kidsart")
    where = _run(
        [python, "-c", "import adapters, serve; print(adapters.__file__); print(serve.__file__)"],
        installed["cwd"],
        installed["env"],
    ).stdout.split()
    assert all(Path(p).is_relative_to(installed["site"]) for p in where), where  # not this checkout
    assert "score-district" in _run([kidsart, "--help"], installed["cwd"], installed["env"]).stdout
    validated = _run([kidsart, "validate", "--profile", "tiny"], installed["cwd"], installed["env"])
    output = validated.stdout + validated.stderr
    assert str(installed["site"]) in output and str(REPO) not in output, output
