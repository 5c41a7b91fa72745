"""Rubrics are data: shipped files load; broken ones fail with the file named."""

import pytest

from adapters.errors import ConfigError, UnknownDimensionError
from adapters.rubric import load_rubric, shipped_rubrics

KIDSART_DIMENSIONS = [
    "realism",
    "deformation",
    "imagination",
    "color_richness",
    "color_contrast",
    "line_combination",
    "line_texture",
    "picture_organization",
    "transformation",
]


def test_kidsartbench_has_the_nine_dimensions_in_order():
    rubric = load_rubric("kidsartbench")
    assert rubric.dimension_names == KIDSART_DIMENSIONS
    assert rubric.score_tokens == ["1", "2", "3", "4", "5"]
    assert rubric.levels == [1, 2, 3, 4, 5]
    for dim in rubric.dimensions:
        assert set(dim.levels) == {1, 2, 3, 4, 5} and dim.description


def test_creativity_rubric_is_shipped_and_uses_description():
    assert {"kidsartbench", "creativity5"} <= set(shipped_rubrics())
    rubric = load_rubric("creativity5")
    assert rubric.dimension_names == ["originality", "color", "texture", "composition", "content"]
    assert rubric.uses_description


def test_select_validates_and_deduplicates():
    rubric = load_rubric()
    assert [d.name for d in rubric.select(None)] == KIDSART_DIMENSIONS
    assert [d.name for d in rubric.select(["realism", "realism", "line_texture"])] == ["realism", "line_texture"]
    with pytest.raises(UnknownDimensionError, match="bogus"):
        rubric.select(["bogus"])


def _write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_missing_rubric_file_names_it(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_rubric(tmp_path / "nope.yaml")


def test_extra_field_and_missing_level_are_errors(tmp_path):
    base = (
        "name: r\ntitle: t\nscore_tokens: ['1','2']\n"
        "dimensions:\n  - name: a\n    description: d\n    levels: {1: x, 2: y}\n"
    )
    assert load_rubric(_write(tmp_path, base)).dimension_names == ["a"]
    with pytest.raises(ConfigError, match="r.yaml"):
        load_rubric(_write(tmp_path, base + "surprise: 1\n"))
    bad_levels = base.replace("{1: x, 2: y}", "{1: x}")
    with pytest.raises(ConfigError, match="levels"):
        load_rubric(_write(tmp_path, bad_levels))


def test_duplicate_dimensions_are_errors(tmp_path):
    text = (
        "name: r\ntitle: t\nscore_tokens: ['1','2']\ndimensions:\n"
        "  - {name: a, description: d, levels: {1: x, 2: y}}\n  - {name: a, description: d, levels: {1: x, 2: y}}\n"
    )
    with pytest.raises(ConfigError, match="duplicate"):
        load_rubric(_write(tmp_path, text))


def test_creativity_points_and_total_out_of_100():
    from adapters.rubric import load_rubric

    creative = load_rubric("creativity5")
    assert creative.points_per_dimension == 20 and creative.total_name == "total_100"
    assert [creative.points(s) for s in (1, 3, 5, 4.5)] == [0, 10, 20, 17.5]
    scores = {d: {"score": 1 + i} for i, d in enumerate(creative.dimension_names)}  # 1..5 -> 0, 5, 10, 15, 20
    with_points, total = creative.with_points(scores)
    assert [with_points[d]["points"] for d in creative.dimension_names] == [0, 5, 10, 15, 20] and total == 50
    assert creative.with_points({"color": {"score": 5}})[1] is None  # a subset has no total
    kids = load_rubric("kidsartbench")
    assert kids.total_name is None and kids.with_points({"realism": {"score": 2}}) == ({"realism": {"score": 2}}, None)


def test_district_table_carries_points_and_total_for_a_points_rubric(tmp_path):
    from adapters.rubric import load_rubric
    from serve.district.export import build_table
    from serve.district.inputs import discover
    from tests.conftest import drawing, png_bytes

    creative = load_rubric("creativity5")
    for i in range(2):
        folder = tmp_path / "d" / "north" / "grade 1" / "class a"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{i}.png").write_bytes(png_bytes(drawing(40 + i)))
    found = discover(tmp_path / "d")
    records = {
        item.key: {
            "key": item.key,
            "sha256": item.sha256,
            "status": "ok",
            "scores": {d: {"score": 3.0, "std": 0.5, "probs": [0, 0, 1, 0, 0]} for d in creative.dimension_names},
        }
        for item in found.items
    }
    frame = build_table(found.items, records, creative.dimension_names, rubric=creative)
    assert list(frame["originality_points"]) == [10.0, 10.0] and list(frame["total_100"]) == [50.0, 50.0]
    kids = build_table(found.items, {}, ["realism"])
    assert not [c for c in kids.columns if c.endswith("_points") or c.startswith("total_")]
