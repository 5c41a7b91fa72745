"""The district job on an OpenAI batch input file, writing the Batch API's output and error files (Issue 27, item 5).

Against the fake /v1/score router (tests/district_fake_router.py): every good line is
answered once, in input order, with the fake router's scores (a duplicate image scored once);
every bad line (not JSON, a remote URL, bad base64, a line asking for what the run does not
score, a duplicate custom_id, another endpoint, bytes that are no image) is named in the
error file; a resumed run sends nothing new.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from serve.district.inputs import discover, read_input_bytes
from serve.protocol import BatchOutputLine, ChatCompletion, ScoreAnswer
from tests.conftest import free_port
from tests.district_fake_router import DIMS, FakeRouter, fake_scores
from tests.district_helpers import run


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _score_line(custom_id: str, image: str, **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/score", "body": {"image": image, **body}})


def _chat_line(custom_id: str, model: str, url: str, text: str = "a house") -> str:
    content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


IMAGES = {name: _png(seed) for seed, name in enumerate(("a", "b", "c"))}
GOOD = ["a", "b", "dup", "c"]  # the lines answered, in input order ("dup" is a's image)
BAD = {  # custom_id in the error file -> what its message must say
    "line-4": "not JSON",
    "remote": "never fetches a URL",
    "dims": "--dimensions realism",
    "feedback": "--feedback",
    "badb64": "not valid base64",
    "a": "used by an earlier line",
    "chat": "this batch's endpoint is /v1/score",
    "noimage": "not a recognised image format",
}


@pytest.fixture(scope="module")
def score_file(tmp_path_factory) -> Path:
    lines = [
        _score_line("a", _data_url(IMAGES["a"])),
        _score_line("b", base64.b64encode(IMAGES["b"]).decode("ascii"), id="caller-b"),
        _score_line("dup", _data_url(IMAGES["a"])),
        "{not json",
        _score_line("remote", "https://example.com/drawing.png"),
        "",
        _score_line("dims", _data_url(IMAGES["b"]), dimensions=["realism"]),
        _score_line("c", _data_url(IMAGES["c"]), description="a cat"),
        _score_line("feedback", _data_url(IMAGES["c"]), feedback=True),
        _score_line("badb64", "data:image/png;base64,!!!not base64!!!"),
        _score_line("a", _data_url(IMAGES["b"])),
        _chat_line("chat", "kidsartbench", _data_url(IMAGES["a"])),
        _score_line("noimage", base64.b64encode(b"hello, not an image").decode("ascii")),
    ]
    path = tmp_path_factory.mktemp("batch") / "district batch.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _read(path: Path) -> list[BatchOutputLine]:
    return [BatchOutputLine.model_validate_json(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_discovery_reads_the_lines_in_file_order_and_rereads_each_image_by_its_offset(score_file):
    found = discover(score_file)
    assert found.endpoint == "/v1/score"
    assert [i.key for i in found.items] == ["a", "b", "dup", "remote", "dims", "c", "feedback", "badb64", "noimage"]
    by_key = {i.key: i for i in found.items}
    for key, image in (("a", "a"), ("b", "b"), ("dup", "a"), ("c", "c")):
        item = by_key[key]
        assert read_input_bytes(item) == IMAGES[image] and not item.local_error_type
        assert item.path == str(score_file.absolute()) and item.student_id == key and item.batch.endpoint == "/v1/score"
    assert by_key["dup"].duplicate_of == "a" and by_key["c"].description == "a cat"
    assert by_key["b"].batch.request_id == "caller-b" and by_key["dims"].batch.dimensions == ("realism",)
    assert by_key["remote"].local_error_type == "invalid_image" and "'remote'" in by_key["remote"].local_error
    assert by_key["badb64"].local_error_type == "invalid_image" and "'badb64'" in by_key["badb64"].local_error
    skipped = dict(found.skipped)
    assert set(skipped) == {f"{score_file.name}:4", "a", "chat"}
    assert "used by an earlier line" in skipped["a"] and "not JSON" in skipped[f"{score_file.name}:4"]


def test_a_batch_file_is_answered_once_per_good_line_in_input_order_and_its_errors_are_named(tmp_path, score_file):
    output = tmp_path / "answers" / "output.jsonl"
    args = [str(score_file), "--out", str(tmp_path / "run"), "--no-progress", "--openai-batch-output", str(output)]
    with FakeRouter(free_port()) as router:
        done = run([*args, "--url", router.url])
        assert done.returncode == 1, done.stderr[-3000:]  # error rows: exit 1
        answered = _read(output)
        assert [line.custom_id for line in answered] == GOOD
        for line in answered:
            assert line.response.status_code == 200 and line.error is None
            answer = ScoreAnswer.model_validate(line.response.body)
            expected = fake_scores(IMAGES["a" if line.custom_id == "dup" else line.custom_id])
            assert list(answer.scores) == DIMS and answer.rubric == "kidsartbench"
            assert {d: s.score for d, s in answer.scores.items()} == {d: e["score"] for d, e in expected.items()}
            assert {d: s.probs for d, s in answer.scores.items()} == {d: e["probs"] for d, e in expected.items()}
            assert answer.id == ("caller-b" if line.custom_id == "b" else line.custom_id)  # the route echoes `id`
        assert sorted(router.scored_ids) == ["a", "b", "c"]  # the duplicate image was scored once
        requests = router.requests

        errors = _read(output.with_name("output.errors.jsonl"))
        assert [e.custom_id for e in errors] == list(BAD)  # in input order
        for error in errors:
            message = error.error.message if error.error else error.response.body["error"]["message"]
            assert BAD[error.custom_id] in message, (error.custom_id, message)
        statuses = {e.custom_id: e.response.status_code for e in errors if e.response}
        assert statuses == {"remote": 400, "dims": 422, "feedback": 422, "badb64": 400, "noimage": 400}

        frame = pd.read_csv(tmp_path / "run" / "scores.csv", keep_default_na=False)
        assert set(frame.loc[frame.status == "ok", "key"]) == set(GOOD) and (frame["school"] == "").all()
        assert (tmp_path / "run" / "report.html").exists()

        again = run([*args, "--url", router.url, "--resume"])
        assert again.returncode == 1, again.stderr[-3000:]
        assert router.requests == requests  # nothing sent again
        assert [line.model_dump() for line in _read(output)] == [line.model_dump() for line in answered]


def test_openai_batch_output_needs_an_openai_batch_input(tmp_path):
    folder = tmp_path / "district"
    folder.mkdir()
    (folder / "one.png").write_bytes(IMAGES["a"])
    refused = run(
        [str(folder), "--out", str(tmp_path / "o"), "--url", "http://127.0.0.1:9", "--openai-batch-output", "x"]
    )
    assert refused.returncode != 0
    assert "--openai-batch-output needs an OpenAI batch input" in refused.stderr
    assert not (tmp_path / "o").exists()


def test_chat_lines_are_answered_as_chat_completions_carrying_the_score_answer(tmp_path):
    from serve.district.job import DistrictJobConfig, run_job

    lines = [
        _chat_line("all", "kidsartbench", _data_url(IMAGES["a"])),
        _chat_line("one", "realism", _data_url(IMAGES["b"])),
        _chat_line("unknown", "gpt-4o", _data_url(IMAGES["b"])),
        _chat_line("remote", "kidsartbench", "https://example.com/a.png"),
    ]
    batch = tmp_path / "chat.jsonl"
    batch.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def score(name: str, dimensions: list[str]) -> tuple[dict, dict]:
        output = tmp_path / f"{name}.jsonl"
        config = DistrictJobConfig(
            input=batch,
            out=tmp_path / name,
            dimensions=dimensions,
            progress=False,
            report=False,
            openai_batch_output=output,
        )
        result = run_job(config, url=router.url)
        assert result.exit_code == 1 and result.summary["errors"] == 3
        errors = {e.custom_id: e.response for e in _read(output.with_name(f"{name}.errors.jsonl"))}
        return {line.custom_id: line.response for line in _read(output)}, errors

    with FakeRouter(free_port()) as router:
        answered, errors = score("all", [])
        assert list(answered) == ["all"]
        completion = ChatCompletion.model_validate(answered["all"].body)
        assert completion.model == "kidsartbench" and completion.id.startswith("chatcmpl-") and completion.usage is None
        answer = completion.answer()
        assert answer.id == completion.id and list(answer.scores) == DIMS
        assert {d: s.score for d, s in answer.scores.items()} == {
            d: e["score"] for d, e in fake_scores(IMAGES["a"]).items()
        }
        assert errors["one"].status_code == 422 and "--dimensions realism" in errors["one"].body["error"]["message"]
        assert errors["unknown"].status_code == 404 and errors["unknown"].body["error"]["type"] == "model_not_found"
        assert errors["remote"].body["error"]["type"] == "invalid_request"
        assert "'remote'" in errors["remote"].body["error"]["message"]

        answered, errors = score("realism", ["realism"])  # a run of one dimension answers the line of that model
        answer = ChatCompletion.model_validate(answered["one"].body).answer()
        assert list(answered) == ["one"] and list(answer.scores) == ["realism"]
        assert answer.scores["realism"].score == fake_scores(IMAGES["b"])["realism"]["score"]
        assert "without --dimensions" in errors["all"].body["error"]["message"]


def test_the_ray_pipelines_reader_reads_files_and_batch_lines_by_offset(tmp_path, score_file):
    """The Ray rows carry each unit's line offset (-1: a file); a line without an image is an error result."""
    from serve.district.ray_pipeline import _read

    png = tmp_path / "one.png"
    png.write_bytes(IMAGES["c"])
    by_key = {i.key: i for i in discover(score_file).items}
    batch = {
        "path": np.array([str(png), by_key["b"].path, by_key["remote"].path]),
        "offset": np.array([-1, by_key["b"].batch.offset, by_key["remote"].batch.offset]),
        "key": np.array(["one.png", "b", "remote"]),
        "sha256": np.array(["", "", ""]),
    }
    read = _read(batch)
    assert read["payload"][:2] == [IMAGES["c"], IMAGES["b"]] and read["error_type"] == ["", "", "invalid_image"]
    assert "'remote'" in read["error"][2] and read["sha256"][1] == by_key["b"].sha256


def test_a_local_error_is_never_reused_for_another_input_with_the_same_image(tmp_path):
    """A line asking for other dimensions is an error for that line only: resumed, a good line with its image
    is scored, not given the other line's error."""
    from serve.district.journal import Journal

    local = {"key": "dims", "sha256": "x", "description": "", "status": "error", "source": "local"}
    with Journal(tmp_path) as journal:
        journal.append([local, {**local, "key": "sent", "sha256": "y", "source": "router"}])
        assert journal.find_content("x", "") is None and journal.find_content("y", "")["key"] == "sent"
