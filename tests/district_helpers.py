"""Helpers shared by the district tests: a generated district, running the CLI, comparing results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "serve.district", "score-district", *args]


def journal_lines(out: Path) -> int:
    path = out / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def journal_keys(out: Path) -> list[str]:
    keys = []
    for line in (out / "journal.jsonl").read_bytes().splitlines():
        try:
            keys.append(json.loads(line)["key"])
        except ValueError:
            pass
    return keys


def run_and_kill(args: list[str], out: Path, kill_after_lines: int, timeout: float = 300) -> int | None:
    """Start the CLI; SIGKILL it once the journal has `kill_after_lines` lines. Returns its exit code if it ended
    first.
    """
    env = {**os.environ, "KIDSART_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        cli(*args), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return process.returncode
            if journal_lines(out) >= kill_after_lines:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                return None
            time.sleep(0.02)
        raise TimeoutError("the district run neither finished nor reached the kill point")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "KIDSART_LOG_LEVEL": "WARNING"}
    return subprocess.run(cli(*args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def score_columns(frame) -> list[str]:
    """The table's score and probability columns: every column but the identifiers (and the adapters)."""
    from serve.district.export import ID_COLUMNS

    return [c for c in frame.columns if c not in (*ID_COLUMNS, "adapters")]


def generated_district(tmp_path_factory, folder: str, **layout) -> tuple[Path, dict]:
    """A synthetic district of 300 images in `folder` (a name with spaces and non-ASCII, as real shares have)."""
    from train.district import make_district

    root = tmp_path_factory.mktemp("district") / folder
    info = make_district(root, schools=layout.pop("schools", 4), grades=3, classes=2, images=300, **layout)
    assert info["expected_inputs"] >= 300
    return root, info
