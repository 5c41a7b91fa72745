"""The OpenAI Batch API on the live router, driven by the official `openai` client: files, batches, per-key
isolation, a file mixing good and bad lines, answers equal to the sync route's, list pages, cancel."""

import base64
import json

import openai
import pytest

from tests.conftest import LIVE_API_KEY, OTHER_API_KEY, drawing, png_bytes, wait_for

pytestmark = pytest.mark.integration


def _client(stack, key: str = LIVE_API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=key, max_retries=0, timeout=120)


def _chat_line(custom_id: str, model: str, url: str) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
        },
    }


def _data_url(seed: int) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(drawing(seed))).decode()


def _finished(client, batch_id: str):
    batch = client.batches.retrieve(batch_id)
    return batch if batch.status in ("completed", "failed", "cancelled", "expired") else None


def test_a_batch_scores_every_good_line_once_and_names_every_bad_one(live_stack):
    client, other = _client(live_stack), _client(live_stack, OTHER_API_KEY)
    urls = {seed: _data_url(seed) for seed in (7101, 7102, 7103)}
    good = [
        _chat_line("a", "kidsartbench", urls[7101]),
        _chat_line("b", "realism", urls[7102]),
        _chat_line("c", "kidsartbench", urls[7103]),
        _chat_line("d", "kidsartbench", urls[7101]),
    ]  # d repeats a
    bad = [
        _chat_line("e", "no-such-model", urls[7101]),
        _chat_line("f", "kidsartbench", "https://x.org/a.png"),
        _chat_line("a", "kidsartbench", urls[7102]),
    ]  # a remote URL; a custom_id used before
    text = (
        "\n".join(
            [json.dumps(line) for line in good[:2]]
            + ["{not json"]
            + [json.dumps(line) for line in good[2:]]
            + [json.dumps(line) for line in bad]
        )
        + "\n"
    )
    upload = client.files.create(file=("district.jsonl", text.encode()), purpose="batch")
    assert upload.purpose == "batch" and upload.bytes == len(text.encode())
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(upload.id)  # another key: it does not exist
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"district": "Nord"}
    )
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)
    done = wait_for(lambda: _finished(client, batch.id), 300, "the batch to finish", poll=1.0)
    assert done.status == "completed" and done.metadata == {"district": "Nord"}
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (8, 4, 4)

    output = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["a", "b", "c", "d"]  # every good line once, in input order
    errors = {
        e["custom_id"]: e
        for e in (json.loads(line) for line in client.files.content(done.error_file_id).text.splitlines())
    }
    assert errors["line-3"]["error"]["code"] == "invalid_json"
    assert errors["e"]["response"]["status_code"] == 404 and errors["f"]["response"]["status_code"] == 422
    assert errors["a"]["error"]["code"] == "duplicate_custom_id"

    sync = {
        cid: json.loads(
            client.chat.completions.create(model=line["body"]["model"], messages=line["body"]["messages"])
            .choices[0]
            .message.content
        )
        for cid, line in (("a", good[0]), ("b", good[1]))
    }
    worst = 0.0
    for out in output:
        reference = sync.get({"d": "a"}.get(out["custom_id"], out["custom_id"]))
        if reference is None:
            continue
        content = json.loads(out["response"]["body"]["choices"][0]["message"]["content"])
        worst = max(worst, *(abs(content["scores"][d]["score"] - e["score"]) for d, e in reference["scores"].items()))
    print(f"\nbatch of 8 lines: 4 answered, 4 refused; max |batch - sync| score {worst:.2e}")
    assert worst < 1e-6
    assert client.batches.list(limit=1).data[0].id == batch.id  # newest first


def test_cancel_stops_a_batch_and_keeps_what_was_answered(live_stack):
    client = _client(live_stack)
    lines = [_chat_line(f"l{i}", "kidsartbench", _data_url(7200 + i)) for i in range(24)]
    upload = client.files.create(
        file=("big.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()), purpose="batch"
    )
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 2, 120, "two answered lines")
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled")
    done = wait_for(lambda: _finished(client, batch.id), 120, "the batch to end", poll=0.5)
    assert done.status == "cancelled" and done.cancelled_at
    answered = client.files.content(done.output_file_id).text.splitlines()
    assert 2 <= len(answered) < 24 and len(answered) == done.request_counts.completed


def test_a_file_over_the_profiles_limit_is_a_413_naming_it(live_stack, tiny_profile):
    limit = tiny_profile.batch.max_file_bytes
    with pytest.raises(openai.APIStatusError) as refused:
        _client(live_stack).files.create(file=("huge.jsonl", b"x" * (limit + 1)), purpose="batch")
    assert refused.value.status_code == 413 and str(limit) in refused.value.message
