"""The review app's view of a district run (serve.review.run): scored artworks found again from run.json and the
journal, their images read as the job read them, the queue ordered by how unsure the model is, and its filters."""

from pathlib import Path

import pytest

from adapters.errors import InputError
from serve.district.job import DistrictJobConfig, run_job
from serve.review.run import ArtworkNotFoundError, ReviewRun, RunNotFoundError, artwork_id
from tests.conftest import free_port
from tests.district_fake_router import FakeRouter

HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    from train.district import make_district

    root = tmp_path_factory.mktemp("district") / "Bezirk"
    make_district(root, seed=9, schools=2, grades=2, classes=1, images=16, broken=2, duplicates=1)
    first_school = sorted(p for p in root.iterdir() if p.is_dir())[0]
    first_school.rename(root / HOSTILE)  # a school folder named like markup: the app must show it as text
    out = tmp_path_factory.mktemp("run")
    with FakeRouter(free_port()) as router:
        result = run_job(DistrictJobConfig(input=root, out=out, report=False, progress=False), url=router.url)
    return root, out, result.summary


def test_the_scored_artworks_and_their_images_are_found_again(scored_run):
    root, out, summary = scored_run
    run = ReviewRun(out)
    assert len(run.artworks) == summary["ok"] > 0
    art = next(a for a in run.artworks.values() if a.school == HOSTILE)
    assert art.id == artwork_id(art.key) and run.artwork(art.id) is art
    assert run.image(art.id) == (root / art.key).read_bytes()
    assert set(art.scores) == set(run.dimensions) and all("probs" in s for s in art.scores.values())
    with pytest.raises(ArtworkNotFoundError):
        run.artwork("0" * 16)


def test_the_queue_puts_the_most_unsure_first_and_filters(scored_run):
    _, out, _ = scored_run
    run = ReviewRun(out)
    queue = run.queue()
    spreads = [a.unsureness() for a in queue]
    assert spreads == sorted(spreads, reverse=True) and len(queue) == len(run.artworks)
    by_dim = run.queue(dimension="realism")
    assert [a.scores["realism"]["std"] for a in by_dim] == sorted(
        (a.scores["realism"]["std"] for a in by_dim), reverse=True
    )
    only = run.queue(school=HOSTILE)
    assert only and all(a.school == HOSTILE for a in only) and HOSTILE in run.choices()["school"]
    with pytest.raises(InputError, match="not one of this run's"):
        run.queue(dimension="no-such")
    with pytest.raises(InputError, match="unknown filters"):
        run.queue(colour="red")


def test_a_folder_that_is_not_a_run_is_named(tmp_path: Path):
    with pytest.raises(RunNotFoundError, match="not a district run folder"):
        ReviewRun(tmp_path)
