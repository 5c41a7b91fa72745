"""Dataset loading: validation errors list the offending rows; never a silent default."""

from __future__ import annotations

import pytest

from adapters.errors import DatasetError
from adapters.rubric import load_rubric
from train.dataset import load_dataset
from train.synth import DIMENSIONS, write_dataset


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_dataset(6, seed=11, out_dir=root)
    return root


def _rewrite(src, dst, edit):
    lines = (src / "labels.csv").read_text().splitlines()
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "labels.csv").write_text("\n".join(edit(lines)) + "\n")
    return dst / "labels.csv"


def test_loads_valid(small_set):
    ds = load_dataset(small_set / "labels.csv", small_set / "images", load_rubric())
    assert len(ds) == 6 and ds.dimensions == list(DIMENSIONS) and ds.has_grades
    assert ds.samples[0].description
    assert (
        ds.content_hash() == load_dataset(small_set / "labels.csv", small_set / "images", load_rubric()).content_hash()
    )
    train, val = ds.split(0.34, seed=0)
    assert len(train) + len(val) == 6 and val
    assert [s.name for s in ds.split(0.34, seed=0)[1]] == [s.name for s in val]


def _set_cell(lines, row, column, value):
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = value
    lines[row] = ",".join(cells)
    return lines


def test_score_out_of_range_lists_rows(small_set, tmp_path):
    csv_path = _rewrite(
        small_set, tmp_path, lambda ls: _set_cell(_set_cell(ls, 2, "realism", "7"), 4, "line_texture", "0")
    )
    with pytest.raises(DatasetError) as err:
        load_dataset(csv_path, small_set / "images", load_rubric())
    message = str(err.value)
    assert "row 3" in message and "realism=7" in message and "row 5" in message and "line_texture=0" in message


def test_missing_value_and_non_integer(small_set, tmp_path):
    csv_path = _rewrite(
        small_set, tmp_path, lambda ls: _set_cell(_set_cell(ls, 1, "imagination", ""), 3, "color_contrast", "3.5")
    )
    with pytest.raises(DatasetError) as err:
        load_dataset(csv_path, small_set / "images", load_rubric())
    assert "imagination is missing" in str(err.value) and "color_contrast=3.5" in str(err.value)


def test_missing_and_unreadable_images(small_set, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    names = [line.split(",")[0] for line in (small_set / "labels.csv").read_text().splitlines()[1:]]
    for name in names[2:]:
        (images / name).write_bytes((small_set / "images" / name).read_bytes())
    (images / names[1]).write_bytes(b"not a png")
    with pytest.raises(DatasetError) as err:
        load_dataset(small_set / "labels.csv", images, load_rubric())
    message = str(err.value)
    assert names[0] in message and "missing" in message
    assert names[1] in message and "unreadable" in message


def test_missing_column_and_subset(small_set, tmp_path):
    csv_path = _rewrite(
        small_set, tmp_path, lambda ls: [",".join(c for i, c in enumerate(line.split(",")) if i != 1) for line in ls]
    )
    with pytest.raises(DatasetError, match="lacks column"):
        load_dataset(csv_path, small_set / "images", load_rubric())
    ds = load_dataset(csv_path, small_set / "images", load_rubric(), ["color_richness"])
    assert ds.dimensions == ["color_richness"]


def test_feedback_training_needs_a_comment_per_row(small_set, tmp_path):
    import pandas as pd

    ds = load_dataset(small_set / "labels.csv", small_set / "images", load_rubric(), require_comment=True)
    assert all(s.comment for s in ds.samples)
    frame = pd.read_csv(small_set / "labels.csv", dtype=str, keep_default_na=False)
    frame.drop(columns=["comment"]).to_csv(tmp_path / "no_comment.csv", index=False)
    with pytest.raises(DatasetError, match=r"lacks column\(s\) \['comment'\]"):
        load_dataset(tmp_path / "no_comment.csv", small_set / "images", load_rubric(), require_comment=True)
    assert load_dataset(tmp_path / "no_comment.csv", small_set / "images", load_rubric()).samples[0].comment is None
    frame.loc[2, "comment"] = "  "
    frame.to_csv(tmp_path / "empty_comment.csv", index=False)
    with pytest.raises(DatasetError, match=r"row 4 \(.*\): comment is empty"):
        load_dataset(tmp_path / "empty_comment.csv", small_set / "images", load_rubric(), require_comment=True)


def test_blank_cells_are_unlabelled_for_training_and_text_grades_are_kept(small_set, tmp_path):
    def edit(lines):
        lines = _set_cell(lines, 1, "realism", "")
        lines = _set_cell(lines, 2, "grade", "Klasse 3b")
        return lines

    csv_path = _rewrite(small_set, tmp_path, edit)
    with pytest.raises(DatasetError, match="realism is missing"):  # evaluation still needs every label
        load_dataset(csv_path, small_set / "images", load_rubric())
    ds = load_dataset(csv_path, small_set / "images", load_rubric(), allow_unlabelled=True)
    assert "realism" not in ds.samples[0].scores and len(ds.samples[0].scores) == len(DIMENSIONS) - 1
    assert ds.samples[1].grade == "Klasse 3b" and isinstance(ds.samples[2].grade, int)

    def blank_all(lines):
        for dim in DIMENSIONS:
            lines = _set_cell(lines, 1, dim, "")
        return lines

    empty_row = _rewrite(small_set, tmp_path / "b", blank_all)
    with pytest.raises(DatasetError, match="no dimension is labelled"):
        load_dataset(empty_row, small_set / "images", load_rubric(), allow_unlabelled=True)
