"""Rubrics are data: shipped files load; broken ones fail with the file named."""
import pytest

from adapters.errors import ConfigError, UnknownDimensionError
from adapters.rubric import load_rubric, shipped_rubrics

KIDSART_DIMENSIONS = [
    "realism", "deformation", "imagination", "color_richness", "color_contrast",
    "line_combination", "line_texture", "picture_organization", "transformation",
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
    base = "name: r\ntitle: t\nscore_tokens: ['1','2']\ndimensions:\n  - name: a\n    description: d\n    levels: {1: x, 2: y}\n"
    assert load_rubric(_write(tmp_path, base)).dimension_names == ["a"]
    with pytest.raises(ConfigError, match="r.yaml"):
        load_rubric(_write(tmp_path, base + "surprise: 1\n"))
    bad_levels = base.replace("{1: x, 2: y}", "{1: x}")
    with pytest.raises(ConfigError, match="levels"):
        load_rubric(_write(tmp_path, bad_levels))


def test_duplicate_dimensions_are_errors(tmp_path):
    text = ("name: r\ntitle: t\nscore_tokens: ['1','2']\ndimensions:\n"
            "  - {name: a, description: d, levels: {1: x, 2: y}}\n  - {name: a, description: d, levels: {1: x, 2: y}}\n")
    with pytest.raises(ConfigError, match="duplicate"):
        load_rubric(_write(tmp_path, text))
