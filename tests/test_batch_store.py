"""The Batch API's durable state (serve/batch/store.py) and its line reader (serve/batch/lines.py)."""

import json
import sqlite3

import pytest

from serve.batch.lines import LineError, LineRequest, read_lines
from serve.batch.store import BatchStore
from serve.protocol import BatchCreateRequest


def _upload(store: BatchStore, owner: str, text: str, name: str = "in.jsonl", retention_s=None):
    path = store.new_upload_path()
    path.write_text(text, encoding="utf-8")
    return store.add_file(owner, name, "batch", path, retention_s)


def test_files_belong_to_their_key_and_survive_a_new_store(tmp_path):
    store = BatchStore(tmp_path)
    mine = _upload(store, "key-a", '{"x": 1}\n', retention_s=3600)
    assert mine.bytes == 9 and mine.expires_at == mine.created_at + 3600 and store.file_path(mine.id).is_file()
    assert store.get_file("key-b", mine.id) is None  # another key: it does not exist
    again = BatchStore(tmp_path)  # a restarted process reads the same state
    assert again.get_file("key-a", mine.id) == mine
    assert not again.delete_file("key-b", mine.id) and again.get_file("key-a", mine.id) is not None
    assert again.delete_file("key-a", mine.id) and again.get_file("key-a", mine.id) is None
    assert not again.file_path(mine.id).exists()
    assert again.expired_files(at=mine.created_at + 7200) == []  # deleted files are not listed again


def test_expired_files_are_listed_by_retention(tmp_path):
    store = BatchStore(tmp_path)
    short = _upload(store, "k", "{}\n", retention_s=10)
    kept = _upload(store, "k", "{}\n", retention_s=None)
    assert store.expired_files(at=short.created_at + 5) == []
    assert store.expired_files(at=short.created_at + 11) == [("k", short.id)]
    assert kept.expires_at is None


def test_batches_page_newest_first_per_key_and_unfinished_ones_are_found_again(tmp_path):
    store = BatchStore(tmp_path)
    request = BatchCreateRequest(input_file_id="file-1", endpoint="/v1/score", completion_window="24h")
    made = [store.create_batch("k", request) for _ in range(5)]
    store.create_batch("other", request)
    first = store.list_batches("k", limit=2)
    assert [b.id for b in first.data] == [made[4].id, made[3].id] and first.has_more
    second = store.list_batches("k", after=first.last_id, limit=10)
    assert [b.id for b in second.data] == [made[2].id, made[1].id, made[0].id] and not second.has_more
    assert store.open_batches("k") == 5 and store.get_batch("other", made[0].id) is None
    store.update_batch(made[0].id, status="completed", completed_at=123)
    store.update_batch(made[1].id, status="in_progress", request_counts={"total": 3, "completed": 1, "failed": 0})
    resumed = BatchStore(tmp_path).unfinished()
    assert [b.id for b in resumed][:4] == [made[1].id, made[2].id, made[3].id, made[4].id]
    assert BatchStore(tmp_path).get_batch(None, made[1].id).request_counts.completed == 1
    with pytest.raises(ValueError):
        store.update_batch(made[2].id, status="not-a-status")
    assert store.get_batch("k", made[2].id).status == "validating"  # a refused change changes nothing


def test_the_state_is_one_sqlite_database_in_wal_mode(tmp_path):
    BatchStore(tmp_path)
    with sqlite3.connect(tmp_path / "batches.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _line(custom_id, url="/v1/score", body=None) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body or {"image": "AAAA"}})


def test_lines_are_sent_or_refused_with_their_reason(tmp_path):
    chat = {"model": "kidsartbench", "messages": [{"role": "user", "content": "hi"}]}
    text = (
        "\n".join(
            [
                _line("a"),
                "not json",
                "",
                json.dumps(["a", "list"]),
                _line("b", url="/v1/chat/completions", body=chat),
                _line("a"),
                _line("c", body={"image": "AAAA", "surprise": 1}),
                _line("d"),
                _line("e"),
            ]
        )
        + "\n"
    )
    path = tmp_path / "in.jsonl"
    path.write_text(text)
    results = list(read_lines(path, "/v1/score", max_lines=2))
    sent = [r for r in results if isinstance(r, LineRequest)]
    refused = {r.line: (r.custom_id, r.code) for r in results if isinstance(r, LineError)}
    assert [(r.line, r.custom_id) for r in sent] == [(1, "a"), (8, "d")]
    assert refused == {
        2: (None, "invalid_json"),
        4: (None, "invalid_request"),
        5: ("b", "wrong_endpoint"),
        6: ("a", "duplicate_custom_id"),
        7: ("c", "invalid_body"),
        9: ("e", "too_many_lines"),
    }
