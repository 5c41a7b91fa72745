"""The review store: append-only saves with versions, the latest row as the current value, a stale page refused
with the newer values, confirmations kept as data, the history for the export, and saves that survive SIGKILL."""

import multiprocessing
import os
import signal

import pytest

from serve.review.store import ReviewConflict, ReviewStore

MODEL = {"realism": (3.4, "realism@a1"), "imagination": (2.1, "imagination@b2")}


def test_versions_count_saves_and_the_latest_row_is_the_current_value(tmp_path):
    store = ReviewStore(tmp_path)
    assert store.current("s1/a.png").version == 0
    first = store.save("s1/a.png", reviewer="ana", seen_version=0, levels={"realism": 4}, model=MODEL)
    second = store.save(
        "s1/a.png",
        reviewer="ben",
        seen_version=1,
        levels={"realism": 2, "imagination": 3},
        model=MODEL,
        feedback="Bold colours.",
    )
    assert (first.version, second.version) == (1, 2)
    assert second.levels == {"realism": 2, "imagination": 3} and second.feedback == "Bold colours."
    assert second.reviewers == ["ana", "ben"]
    assert store.versions() == {"s1/a.png": 2}
    history = store.history()
    assert [h["version"] for h in history] == [1, 2]  # nothing overwritten: both saves are there
    assert history[0]["levels"]["realism"] == {"level": 4, "model_score": 3.4, "adapter": "realism@a1"}


def test_a_save_from_a_stale_page_is_refused_with_the_newer_values(tmp_path):
    store = ReviewStore(tmp_path)
    store.save("a", reviewer="ana", seen_version=0, levels={"realism": 5}, model=MODEL)
    with pytest.raises(ReviewConflict, match="saved by ana") as conflict:
        store.save("a", reviewer="ben", seen_version=0, levels={"realism": 1}, model=MODEL)
    assert conflict.value.current.levels == {"realism": 5} and conflict.value.current.version == 1
    assert store.current("a").levels == {"realism": 5}


def test_confirm_as_is_is_a_save_too(tmp_path):
    store = ReviewStore(tmp_path)
    state = store.save(
        "a", reviewer="ana", seen_version=0, levels={"realism": 3, "imagination": 2}, model=MODEL, confirm=True
    )
    assert state.confirmed and state.version == 1 and store.history()[0]["confirm"] is True


def test_a_level_for_a_dimension_the_model_did_not_score_is_refused(tmp_path):
    with pytest.raises(Exception, match="no model score for dimensions"):
        ReviewStore(tmp_path).save("a", reviewer="ana", seen_version=0, levels={"colour": 3}, model=MODEL)


def _save_forever(run_dir, ready):
    store = ReviewStore(run_dir)
    version = 0
    while True:
        version = store.save(
            "a", reviewer="ana", seen_version=version, levels={"realism": 1 + version % 5}, model=MODEL
        ).version
        if version == 20:
            ready.set()


def test_every_save_that_returned_survives_a_sigkill(tmp_path):
    ready = multiprocessing.get_context("spawn").Event()
    process = multiprocessing.get_context("spawn").Process(target=_save_forever, args=(tmp_path, ready))
    process.start()
    assert ready.wait(60)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    store = ReviewStore(tmp_path)
    history = store.history()
    version = store.current("a").version
    assert version >= 20 and [h["version"] for h in history] == list(range(1, version + 1))  # no gap, no half save
