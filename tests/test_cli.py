"""The `kidsart` command: instant help and clear errors (`serve` stopping on a signal: test_batch_durable.py)."""

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import drawing

KIDSART = str(Path(sys.executable).with_name("kidsart"))


def test_help_is_fast_and_lists_commands():
    started = time.monotonic()
    result = subprocess.run([KIDSART, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("serve", "score", "build-base", "demo"):
        assert command in result.stdout
    heavy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import kidsart.cli, sys; print(sorted(m for m in ('torch','vllm','ray','transformers') if m in "
            "sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert heavy.stdout.strip() == "[]", "kidsart --help imports heavy modules"
    assert time.monotonic() - started < 30


def test_unknown_profile_is_a_clear_cli_error():
    result = subprocess.run([KIDSART, "validate", "--profile", "nope"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "profile 'nope'" in result.stderr


def test_score_reference_backend_writes_json_lines_and_flags_bad_files(tmp_path):
    good = tmp_path / "good drawing.png"
    drawing(21).save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = subprocess.run(
        [KIDSART, "score", str(good), str(bad), "--backend", "reference", "-d", "realism", "-d", "line_texture"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["image"] == str(good) and list(lines[0]["scores"]) == ["realism", "line_texture"]
    assert lines[1]["image"] == str(bad) and "decoded" in lines[1]["error"] and "scores" not in lines[1]


def test_score_reference_backend_feedback_and_its_refusal(tmp_path):
    from adapters.feedback import named_dimensions
    from adapters.rubric import load_rubric

    image = tmp_path / "drawing.png"
    drawing(22).save(image)
    result = subprocess.run(
        [KIDSART, "score", str(image), "--backend", "reference", "--feedback"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = json.loads(result.stdout)
    assert line["feedback"]["adapter"].startswith("feedback@") and len(line["feedback"]["text"].split()) >= 8
    # the comment speaks of the rubric's dimensions by their titles
    assert named_dimensions(line["feedback"]["text"], load_rubric("kidsartbench"))
    plain = json.loads(
        subprocess.run(
            [KIDSART, "score", str(image), "--backend", "reference"], capture_output=True, text=True, timeout=300
        ).stdout
    )
    assert "feedback" not in plain and plain["scores"] == line["scores"]  # feedback does not change the scores
    refused = subprocess.run(
        [KIDSART, "score", str(image), "--backend", "reference", "--profile", "creativity-tiny", "--feedback"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "'creativity-tiny'" in refused.stderr and "no feedback adapter" in refused.stderr
    assert refused.stdout == ""  # refused before any image is scored


def test_import_adapters_names_every_problem_and_exits_2(tmp_path):
    (tmp_path / "release" / "dimension_colour").mkdir(parents=True)
    result = subprocess.run(
        [
            KIDSART,
            "import-adapters",
            str(tmp_path / "release"),
            "--format",
            "kidsartbench",
            "--profile",
            "tiny",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "dimension_colour: 'colour' is not a dimension of the rubric" in result.stderr
    assert "missing dimension folder(s): dimension_realism" in result.stderr
    assert not (tmp_path / "out").exists()
