"""The `kidsart` command: instant help, clear errors, and `serve` stopping cleanly on SIGINT/SIGTERM."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import descendants, drawing, free_port, readyz, still_running, wait_for

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


@pytest.mark.integration
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM], ids=["SIGTERM"])  # SIGINT: test_batch_durable.py
def test_serve_scores_then_stops_on_signal_leaving_no_process(tmp_path, stop_signal):
    port = free_port()
    process = subprocess.Popen(
        [KIDSART, "serve", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    seen: set[int] = set()
    try:

        def ready() -> bool:
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            seen.update(p.pid for p in descendants(process.pid))
            return readyz(f"http://127.0.0.1:{port}")[0] == 200

        wait_for(ready, 300, "kidsart serve to be ready", poll=1.0)
        image = tmp_path / "a.png"
        drawing(22).save(image)
        scored = subprocess.run(
            [KIDSART, "score", str(image), "--url", f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert scored.returncode == 0, scored.stderr
        assert len(json.loads(scored.stdout)["scores"]) == 9
        seen.update(p.pid for p in descendants(process.pid))
        assert len(seen) >= 3  # Ray's processes, the replicas, the vLLM engine under the engine replica
        assert any("EngineCore" in p.name() for p in descendants(process.pid) if p.is_running())
        process.send_signal(stop_signal)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()

    def still_alive():
        return still_running(seen)

    try:
        wait_for(lambda: not still_alive(), 20, "every process of the stack to end", poll=1.0)
    except AssertionError as exc:
        raise AssertionError(f"processes left behind: {still_alive()}") from exc
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)


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
