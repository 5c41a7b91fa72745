"""District batch scoring without the real stack: discovery, journal, planning, export, CLI against a fake router."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from serve.district.inputs import discover
from serve.district.journal import Journal, JournalError
from serve.district.runner import plan_work
from tests.conftest import free_port, wait_for
from tests.district_fake_router import FakeRouter, fake_scores
from tests.district_helpers import run


@pytest.fixture(scope="module")
def small_district(tmp_path_factory):
    from train.district import make_district

    root = tmp_path_factory.mktemp("small") / "Distrito Ñandú"
    info = make_district(root, seed=3, schools=3, grades=2, classes=2, images=40, broken=4, duplicates=3)
    return root, info


def test_discovery_finds_every_input_and_skips_the_rest(small_district):
    root, info = small_district
    found = discover(root)
    keys = {item.key for item in found.items}
    assert len(found.items) == info["expected_inputs"]
    assert set(info["images"]) | set(info["broken"]) | set(info["duplicates"]) <= keys
    assert info["links"]["inside"] in keys and info["links"]["outside"] not in keys
    reasons = dict(found.skipped)
    assert reasons[info["links"]["outside"]] == "symbolic link leading outside the root"
    assert all(reasons[h.split("/")[0] if h.startswith(".") else h] == "hidden" for h in info["hidden"])
    assert reasons["district.json"] == "not an image file type"
    # folder levels become columns; depths vary (no class level, an extra level)
    item = next(i for i in found.items if i.key == info["images"][0])
    school, grade, klass = info["images"][0].split("/")[:3]
    assert (item.school, item.grade, item.class_name) == (school, grade, klass)
    assert any(i.folder == "term 2" for i in found.items)
    assert any(i.class_name == "" and i.school for i in found.items)
    # every copy is reported as a duplicate of an earlier input with the same content
    dupes = {i.key: i.duplicate_of for i in found.items if i.duplicate_of}
    in_groups = set(dupes) | set(dupes.values())
    assert set(info["duplicates"]) | {info["links"]["inside"]} <= in_groups
    assert len(dupes) >= len(info["duplicates"]) + 1
    by_key = {i.key: i for i in found.items}
    assert all(by_key[k].sha256 == by_key[v].sha256 for k, v in dupes.items())
    assert any(i.local_error_type == "invalid_image" and i.size == 0 for i in found.items)


def test_csv_manifest(tmp_path, small_district):
    root, info = small_district
    manifest = tmp_path / "list.csv"
    rows = [
        {"path": str(root / info["images"][0]), "student_id": "s-1", "school": "Über", "grade": "3"},
        {"path": str(root / info["images"][0]), "student_id": "s-1b", "school": "Über", "grade": "3"},
        {"path": "does/not/exist.png", "student_id": "s-2", "school": "Über", "grade": "4"},
    ]
    pd.DataFrame(rows).to_csv(manifest, index=False)
    found = discover(manifest)
    assert [i.student_id for i in found.items] == ["s-1", "s-1b", "s-2"]
    assert found.items[1].key.endswith("#2") and found.items[1].duplicate_of == found.items[0].key
    assert found.items[2].local_error_type == "missing_file"


def test_journal_cuts_a_torn_line_and_locks(tmp_path):
    with Journal(tmp_path) as journal:
        journal.append([{"key": "a", "sha256": "x", "status": "ok"}, {"key": "b", "sha256": "y", "status": "ok"}])
        with pytest.raises(JournalError):
            Journal(tmp_path).open()
    with (tmp_path / "journal.jsonl").open("ab") as handle:
        handle.write(b'{"key": "c", "sha2')  # a kill in the middle of a write
    with Journal(tmp_path) as journal:
        assert set(journal.records) == {"a", "b"}
        assert journal.is_done("a", "x") and not journal.is_done("a", "changed")
        journal.append([{"key": "c", "sha256": "z", "status": "ok"}])
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b", "c"]


def test_plan_groups_duplicates_and_reuses_results(tmp_path, small_district):
    root, _ = small_district
    found = discover(root)
    with Journal(tmp_path) as journal:
        plan = plan_work(found.items, journal)
        distinct = {(i.sha256, i.description) for i in found.items if not i.local_error_type}
        assert len(plan.units) == len(distinct)
        assert plan.pending_inputs == len(found.items)
        unit = next(u for u in plan.units if len(u.items) > 1)
        journal.append(
            [
                {
                    "key": unit.first.key,
                    "sha256": unit.first.sha256,
                    "description": "",
                    "status": "ok",
                    "scores": fake_scores(b"x"),
                }
            ]
        )
        again = plan_work(found.items, journal)
        assert again.already_done == 1
        reused = [r for r in again.immediate if r.get("reused_from") == unit.first.key]
        assert {r["key"] for r in reused} == {i.key for i in unit.items[1:]}


def test_cli_against_fake_router_with_outages(tmp_path, small_district):
    root, info = small_district
    with FakeRouter(free_port(), delay_s=0.02) as router:
        result = run(
            [str(root), "--out", str(tmp_path / "a"), "--url", router.url, "--concurrency", "4", "--no-report"]
        )
        assert result.returncode == 1, result.stderr  # broken files -> error rows -> exit 1
        assert "errors by type" in result.stdout
        frame = pd.read_csv(tmp_path / "a" / "scores.csv", keep_default_na=False)
        parquet = pd.read_parquet(tmp_path / "a" / "scores.parquet")
        assert len(frame) == len(parquet) == info["expected_inputs"]
        assert set(frame.loc[frame.status == "error", "key"]) == set(info["broken"])
        ok = parquet[parquet.status == "ok"]
        for row in ok.head(5).itertuples():
            expected = fake_scores((root / row.key).read_bytes())
            assert row.realism == pytest.approx(expected["realism"]["score"], abs=1e-12)
        # same output folder without --resume is refused; with --resume nothing is redone
        refused = run([str(root), "--out", str(tmp_path / "a"), "--url", router.url, "--no-report"])
        assert refused.returncode == 2 and "--resume" in refused.stderr
        requests = router.requests
        again = run([str(root), "--out", str(tmp_path / "a"), "--url", router.url, "--resume", "--no-report"])
        assert again.returncode == 1 and router.requests == requests

        # 503 + Retry-After mid-run (an engine restart behind the router)
        import subprocess

        from tests.district_helpers import REPO, cli, journal_lines

        router.delay_s = 0.05
        process = subprocess.Popen(
            cli(str(root), "--out", str(tmp_path / "b"), "--url", router.url, "--no-report", "--concurrency", "2"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: journal_lines(tmp_path / "b") >= 10, 60, "the run to be scoring", poll=0.02)
        assert process.poll() is None, "the run ended before the outage"
        router.down(2.5)
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 1, stderr
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "b" / "scores.parquet"), parquet)
        assert json.loads((tmp_path / "b" / "summary.json").read_text())["retries"] > 0


def test_router_gone_then_back(tmp_path, small_district):
    """Connection refused for a while (router restart): retried until it is back; same results."""
    import subprocess
    import time

    from tests.district_helpers import REPO, cli

    root, info = small_district
    port = free_port()
    router = FakeRouter(port, delay_s=0.05).start()
    process = subprocess.Popen(
        cli(str(root), "--out", str(tmp_path / "c"), "--url", router.url, "--no-report", "--concurrency", "2"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    from tests.district_helpers import journal_lines

    wait_for(lambda: journal_lines(tmp_path / "c") >= 10, 60, "the run to be scoring", poll=0.02)
    assert process.poll() is None, "the run ended before the router went away"
    router.stop()
    time.sleep(3)
    router = FakeRouter(port, delay_s=0.01).start()
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        router.stop()
    assert process.returncode == 1, stderr
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["retries"] > 0, "no retry was needed: no outage"
    frame = pd.read_parquet(tmp_path / "c" / "scores.parquet")
    assert len(frame) == info["expected_inputs"] and (frame.status != "pending").all()
    assert set(frame.loc[frame.status == "error", "key"]) == set(info["broken"])


def test_the_served_rubric_and_limits_are_read_from_the_router_or_named_as_missing(tmp_path):
    from adapters.errors import ConfigError
    from adapters.limits import DEFAULT_LIMITS
    from serve.district.session import previous_rubric, served_models

    with FakeRouter(free_port()) as router:
        served = served_models(router.url)
        assert served.rubric == "kidsartbench" and served.limits == DEFAULT_LIMITS
        assert served.dimensions and "kidsartbench" not in served.dimensions and served.feedback_adapter is None
    with FakeRouter(free_port(), max_image_bytes=5000) as router:
        assert served_models(router.url).limits.max_image_bytes == 5000
    with pytest.raises(ConfigError, match=r"could not read .*/v1/models .*; pass --rubric NAME"):
        served_models(f"http://127.0.0.1:{free_port()}", max_wait_s=0)
    assert previous_rubric(tmp_path) is None
    (tmp_path / "run.json").write_text('{"rubric": "creativity5"}')
    assert previous_rubric(tmp_path) == "creativity5"


def test_a_router_without_a_profile_gives_its_limits_to_discovery(tmp_path, small_district):
    """--url only: files above the router's max_image_bytes are error rows at once and never sent."""
    root, info = small_district
    sizes = sorted(f.stat().st_size for f in root.rglob("*.png"))
    limit = max(1024, sizes[len(sizes) // 2])  # about half of the PNGs are above it
    with FakeRouter(free_port(), max_image_bytes=limit) as router:
        result = run([str(root), "--out", str(tmp_path / "l"), "--url", router.url, "--no-report"])
        frame = pd.read_csv(tmp_path / "l" / "scores.csv", keep_default_na=False)
        too_large = frame[frame.error_type == "image_too_large"]
        assert result.returncode == 1 and len(too_large) > 0, result.stderr
        assert all(f"the limit is {limit}" in message for message in too_large.error)
        assert not set(too_large.key) & set(router.scored_ids)


def test_feedback_run_writes_a_feedback_column_and_shows_it_on_the_cards(tmp_path, small_district):
    """--feedback against a router with a feedback adapter: each row's comment in the CSV and the report;
    against one without: refused before any image is sent; a resumed run must keep the same setting."""
    import html
    import subprocess

    from tests.district_helpers import REPO, cli

    root, _ = small_district
    out = tmp_path / "with"
    with FakeRouter(free_port(), feedback_adapter="feedback@fake") as router:
        done = subprocess.run(
            cli(str(root), "--out", str(out), "--url", router.url, "--feedback", "--no-progress"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode in (0, 1), done.stderr[-2000:]
        frame = pd.read_csv(out / "scores.csv", keep_default_na=False)
        ok = frame[frame.status == "ok"]
        assert len(ok) and all(text.startswith("Comment <") for text in ok["feedback"])
        assert all("feedback=feedback@fake" in a for a in ok["adapters"])
        report = (out / "report.html").read_text(encoding="utf-8")
        assert all(html.escape(text) in report for text in ok["feedback"])  # every listed card shows its comment
        assert report.count("class='feedback'") == len(ok)
        # resuming without --feedback would mix rows with and without comments: refused
        again = subprocess.run(
            cli(str(root), "--out", str(out), "--url", router.url, "--resume", "--no-progress"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode != 0 and "made with --feedback" in again.stderr
    with FakeRouter(free_port()) as router:
        refused = subprocess.run(
            cli(str(root), "--out", str(tmp_path / "without"), "--url", router.url, "--feedback", "--no-progress"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert refused.returncode != 0 and f"the router at {router.url} has no feedback adapter" in refused.stderr
        assert router.requests == 0
