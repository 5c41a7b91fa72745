"""The creativity rubric (creativity5) served end to end on the tiny base: description in the prompt,
0-20 points per dimension and the total out of 100 in the response and the district CSV."""

from __future__ import annotations

import base64
import csv

import httpx
import pytest

from tests.conftest import drawing, own_stack, png_bytes

pytestmark = [pytest.mark.integration, pytest.mark.own_ray]


def test_creativity_profile_scores_points_and_totals(tmp_path):
    import pandas as pd

    from adapters.profiles import load_profile
    from tests.district_helpers import run

    profile = load_profile("creativity-tiny")
    rubric_dims = ["originality", "color", "texture", "composition", "content"]
    image = png_bytes(drawing(6101, size=(320, 240)))
    with own_stack(profile, tmp_path / "logs") as stack:
        models = httpx.get(f"{stack.url}/v1/models", timeout=30).json()["data"]
        assert [m["id"] for m in models] == ["creativity5", *rubric_dims]
        answers = {}
        for description in ("a red house under a yellow sun", None):
            body = {"image": base64.b64encode(image).decode()}
            if description:
                body["description"] = description
            response = httpx.post(f"{stack.url}/v1/score", json=body, timeout=120)
            assert response.status_code == 200, response.text
            answers[description] = result = response.json()
            assert list(result["scores"]) == rubric_dims
            for entry in result["scores"].values():
                assert entry["points"] == pytest.approx((entry["score"] - 1) * 5) and 0 <= entry["points"] <= 20
            assert result["total"] == pytest.approx(sum(e["points"] for e in result["scores"].values()))
            assert result["total_max"] == 100
        # the description is part of the prompt: it changes what the adapters see
        assert answers["a red house under a yellow sun"]["scores"] != answers[None]["scores"]
        one = httpx.post(
            f"{stack.url}/v1/score",
            json={"image": base64.b64encode(image).decode(), "dimensions": ["color"]},
            timeout=120,
        ).json()
        assert "total" not in one and "points" in one["scores"]["color"]  # no total for a subset
        # this deployment has no feedback adapter: asking for feedback is a 422 naming it, on every route
        refused = httpx.post(
            f"{stack.url}/v1/score", json={"image": base64.b64encode(image).decode(), "feedback": True}, timeout=60
        )
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["type"] == "feedback_not_deployed" and "no feedback adapter" in error["message"]
        assert "'creativity-tiny'" in error["message"] and "feedback@<hash> LoRA module" in error["message"]
        multipart = httpx.post(
            f"{stack.url}/v1/score", files={"image": ("a.png", image)}, data={"feedback": "true"}, timeout=60
        )
        assert multipart.status_code == 422 and multipart.json()["error"]["type"] == "feedback_not_deployed"

        manifest = tmp_path / "district.csv"
        with manifest.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "student_id", "school", "grade", "class", "description"])
            for i in range(4):
                path = tmp_path / f"art{i}.png"
                path.write_bytes(png_bytes(drawing(6200 + i, size=(300, 220))))
                writer.writerow([str(path), f"s{i}", "north", "2", "a", f"drawing number {i} of a garden"])
        # no --rubric: the job reads the served rubric (creativity5) from the router's /v1/models
        result = run([str(manifest), "--out", str(tmp_path / "out"), "--url", stack.url, "--no-progress"])
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert len(frame) == 4 and frame["status"].eq("ok").all()
    for dim in rubric_dims:
        assert (frame[f"{dim}_points"] - (frame[dim] - 1) * 5).abs().max() < 1e-9
    assert (frame["total_100"] - frame[[f"{d}_points" for d in rubric_dims]].sum(axis=1)).abs().max() < 1e-9
    assert "feedback" not in frame.columns  # not asked for
    report = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "total (0-100 points)" in report and report.count("/100</b>") == 4  # the total on every card
