"""`kidsart ablate`: a seeded split, every row trained and evaluated, ablation.json and ablation.md consistent."""

from __future__ import annotations

import json

import pandas as pd
import pytest


def test_split_is_seeded_disjoint_and_complete(tmp_path):
    from train.ablate import split_csv

    frame = pd.DataFrame({"name": [f"a{i}.png" for i in range(200)], "realism": 3})
    frame.to_csv(tmp_path / "all.csv", index=False)
    train, test = split_csv(tmp_path / "all.csv", tmp_path / "s1", 0.2, seed=3)
    again, _ = split_csv(tmp_path / "all.csv", tmp_path / "s2", 0.2, seed=3)
    other, _ = split_csv(tmp_path / "all.csv", tmp_path / "s3", 0.2, seed=4)
    a, b = set(pd.read_csv(train)["name"]), set(pd.read_csv(test)["name"])
    assert not a & b and len(a | b) == 200 and 25 <= len(b) <= 55
    assert a == set(pd.read_csv(again)["name"]) and a != set(pd.read_csv(other)["name"])


def test_ablate_refuses_a_malformed_dataset_naming_every_problem(tmp_path):
    from typer.testing import CliRunner

    from kidsart.cli import app
    from train.synth import write_dataset

    csv_path = write_dataset(4, seed=91, out_dir=tmp_path / "d")
    frame = pd.read_csv(csv_path)
    frame.loc[0, "realism"] = 9
    frame.loc[2, "name"] = "missing.png"
    frame.to_csv(csv_path, index=False)
    result = CliRunner().invoke(
        app,
        ["ablate", "--data", str(csv_path), "--images", str(tmp_path / "d" / "images"), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code != 0
    message = str(result.exception)
    assert "row 2" in message and "realism=9" in message and "row 4" in message and "missing.png" in message


@pytest.mark.integration
def test_ablate_small_run_writes_consistent_table(tiny_profile, tmp_path):
    from train.ablate import ROWS, run_ablation
    from train.synth import write_dataset

    csv_path = write_dataset(30, seed=92, out_dir=tmp_path / "d")
    result = run_ablation(csv_path, tmp_path / "d" / "images", tmp_path / "out", epochs=1, n_boot=10)
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert [r["key"] for r in saved["rows"]] == [key for key, *_ in ROWS]
    assert saved["meta"]["split"]["n_train"] + saved["meta"]["split"]["n_test"] == 30
    table = (tmp_path / "out" / "ablation.md").read_text()
    for row in result["rows"]:
        assert len(row["dimensions"]) == 9 and row["mean"]["mse"] is not None
        assert row["label"] in table and f"{row['mean']['mse']:.3f}" in table
    rail, argmax = saved["rows"][3], saved["rows"][4]
    assert argmax["decode"] == "argmax" and rail["decode"] == "rail"
    # argmax decodes the same adapters: integer predictions, so MSE differs from RAIL's
    assert rail["mean"]["mse"] != argmax["mean"]["mse"]
