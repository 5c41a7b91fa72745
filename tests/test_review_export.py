"""The review export: the training CSV holds exactly the levels teachers set (blank: not labelled), images beside
it, read by `kidsart train --dry-run`; Label Studio tasks with predictions and annotations; the JSONL history."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adapters.rubric import load_rubric
from serve.review.export import export_reviews
from serve.review.run import ReviewRun
from serve.review.service import ReviewRequest, ReviewService
from serve.review.store import ReviewStore
from tests.test_review_run import scored_run  # noqa: F401 (the module-scoped fixture)
from train.continue_training import count_reviewers
from train.dataset import load_dataset

KIDSART = str(Path(sys.executable).with_name("kidsart"))


@pytest.fixture
def reviewed(scored_run, tmp_path):  # noqa: F811
    import shutil

    _, out, _ = scored_run
    run_dir = tmp_path / "run"
    shutil.copytree(out, run_dir)  # its own review.sqlite
    service = ReviewService(ReviewRun(run_dir), ReviewStore(run_dir))
    first, second = [item["id"] for item in service.queue()[:2]]
    service.save(first, "ana", ReviewRequest(levels={"realism": 5, "imagination": 1}, seen_version=0))
    service.save(first, "ben", ReviewRequest(feedback="Strong shapes & <bold> colours.", seen_version=1))
    service.save(second, "ana", ReviewRequest(confirm=True, seen_version=0))
    return run_dir, service, first, second


def test_the_training_csv_holds_what_teachers_set_and_train_reads_it(reviewed, tmp_path):
    run_dir, service, first, second = reviewed
    out = tmp_path / "export" / "corrections.csv"
    written = export_reviews(run_dir, "training-csv", out)
    images = out.parent / "corrections-images"
    assert written == [out, images]
    dataset = load_dataset(out, images, load_rubric("kidsartbench"), allow_unlabelled=True)
    rows = {s.name.split(".")[0]: s for s in dataset.samples}
    assert set(rows) == {first, second}  # only reviewed artworks
    assert (
        rows[first].scores == {"realism": 5, "imagination": 1}
        and rows[first].comment == "Strong shapes & <bold> colours."
    )
    confirmed = service.artwork(second)["scores"]
    assert rows[second].scores == {
        d: min(range(1, 6), key=lambda k: (abs(k - s["score"]), k)) for d, s in confirmed.items()
    }
    assert count_reviewers(out) == 2  # ana and ben: continued training records it (train.continue_training)
    dry = subprocess.run(
        [KIDSART, "train", "--data", str(out), "--images", str(images), "--out", str(tmp_path / "a"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    report = json.loads(dry.stdout)
    assert report["data"]["rows"] == 2 and report["data"]["labelled"]["realism"] == 2
    assert report["data"]["labelled"]["color_richness"] == 1  # only the confirmed artwork labels it


def test_label_studio_tasks_and_the_jsonl_history(reviewed, tmp_path):
    run_dir, _, first, _ = reviewed
    tasks_file = tmp_path / "ls" / "tasks.json"
    written = export_reviews(run_dir, "label-studio", tasks_file)
    tasks = json.loads(tasks_file.read_text())
    assert len(tasks) == 2 and (tmp_path / "ls" / "tasks.label-config.xml") in written
    task = next(t for t in tasks if first in t["data"]["image"])
    assert (tmp_path / "ls" / task["data"]["image"]).is_file()
    annotated = {r["from_name"]: r["value"] for r in task["annotations"][0]["result"]}
    assert annotated["realism"] == {"choices": ["5"]} and annotated["feedback"]["text"] == [
        "Strong shapes & <bold> colours."
    ]
    assert len(task["predictions"][0]["result"]) == 9
    history_file = tmp_path / "history.jsonl"
    export_reviews(run_dir, "jsonl", history_file)
    history = [json.loads(line) for line in history_file.read_text().splitlines()]
    assert [(h["artwork"], h["version"], h["reviewer"]) for h in history][:2] == [(first, 1, "ana"), (first, 2, "ben")]
    with pytest.raises(Exception, match="unknown format"):
        export_reviews(run_dir, "xlsx", tmp_path / "x.xlsx")
