"""Synthetic artworks: deterministic, labelled for all nine dimensions, written in KidsArtBench format."""

from __future__ import annotations

import csv

import numpy as np

from train.synth import DIMENSIONS, render_artwork, render_record, write_dataset


def test_render_is_deterministic_and_labelled():
    a, labels_a = render_artwork(7)
    b, labels_b = render_artwork(7)
    assert labels_a == labels_b
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert a.size == (400, 300) and a.mode == "RGB"
    assert set(labels_a) == set(DIMENSIONS)
    assert all(1 <= v <= 5 for v in labels_a.values())
    other, _ = render_artwork(8)
    assert not np.array_equal(np.asarray(a), np.asarray(other))


def test_render_record_matches_render_artwork():
    image, labels = render_artwork(3, width=320, height=240)
    image2, labels2, grade, description = render_record(3, width=320, height=240)
    assert labels == labels2 and np.array_equal(np.asarray(image), np.asarray(image2))
    assert 1 <= grade <= 6 and description


def test_labels_cover_all_levels():
    seen = {d: set() for d in DIMENSIONS}
    for seed in range(60):
        _, labels = render_artwork(seed, 120, 90)
        for d, v in labels.items():
            seen[d].add(v)
    assert all(levels == {1, 2, 3, 4, 5} for levels in seen.values())


def test_color_richness_drives_hue_count():
    """More hues for higher color_richness: count saturated hue bins in the pixels."""
    from PIL import Image

    def hues(img: Image.Image) -> int:
        hsv = np.asarray(img.convert("HSV"), dtype=float)
        mask = (hsv[..., 1] > 90) & (hsv[..., 2] > 60)
        hist = np.histogram(hsv[..., 0][mask], bins=24, range=(0, 256))[0]
        return int((hist > 150).sum())

    low, high = [], []
    for seed in range(80):
        img, labels = render_artwork(seed)
        if labels["color_contrast"] >= 4:
            (low if labels["color_richness"] <= 2 else high if labels["color_richness"] >= 4 else []).append(hues(img))
    assert low and high and np.mean(high) > np.mean(low) + 1.5


def test_write_dataset_format(tmp_path):
    csv_path = write_dataset(5, seed=3, out_dir=tmp_path)
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 5
    assert list(rows[0].keys()) == ["name", *DIMENSIONS, "grade", "description", "comment"]
    for row in rows:
        assert (tmp_path / "images" / row["name"]).is_file()
        assert all(row[d] in {"1", "2", "3", "4", "5"} for d in DIMENSIONS)
    # different seeds give different artworks
    other = write_dataset(2, seed=4, out_dir=tmp_path / "b")
    assert list(csv.DictReader(other.open()))[0]["name"] != rows[0]["name"]


def test_creativity_dataset_reads_its_five_dimensions_from_the_same_drawings(tmp_path):
    from adapters.rubric import load_rubric
    from train.dataset import load_dataset
    from train.synth import CREATIVITY_FROM

    kids = list(csv.DictReader(write_dataset(6, seed=8, out_dir=tmp_path / "k").open()))
    creative_csv = write_dataset(6, seed=8, out_dir=tmp_path / "c", rubric="creativity5")
    creative = list(csv.DictReader(creative_csv.open()))
    rubric = load_rubric("creativity5")
    assert list(creative[0].keys()) == ["name", *rubric.dimension_names, "grade", "description", "comment"]
    for k, c in zip(kids, creative, strict=True):  # same seeds, same drawings: each label is its stand-in's
        assert all(c[dim] == k[source] for dim, source in CREATIVITY_FROM.items())
        assert c["description"] and c["description"] == k["description"]
    dataset = load_dataset(creative_csv, tmp_path / "c" / "images", rubric, None)
    assert dataset.dimensions == rubric.dimension_names and dataset.samples[0].description
    import pytest

    with pytest.raises(ValueError, match="synthetic labels exist for rubrics"):
        write_dataset(1, seed=1, out_dir=tmp_path / "x", rubric="other")


def test_a_shifted_district_has_the_same_labels_and_layouts_on_another_surface(tmp_path):
    import pytest

    from train.synth import _render
    from train.synth_shift import SHIFTS, get_shift

    shift = SHIFTS["new-district"]
    for seed in (11, 12, 13):
        plain, labels, grade, details = _render(seed, 400, 300, "uniform")
        shifted, labels_s, grade_s, details_s = _render(seed, 400, 300, "uniform", shift)
        assert (labels, grade, details["n_hues"], details["corner"]) == (
            labels_s,
            grade_s,
            details_s["n_hues"],
            details_s["corner"],
        )
        paper_plain = np.asarray(plain)[:6, :6].reshape(-1, 3).mean(axis=0)
        paper_shift = np.asarray(shifted)[:6, :6].reshape(-1, 3).mean(axis=0)
        assert paper_plain.mean() > 220 and abs(paper_shift - np.asarray(shift.paper_rgb)).max() < 25  # kraft paper
    # the unshifted drawings are exactly what they were (the committed adapters were trained on them)
    again, _ = render_artwork(11)
    assert np.array_equal(np.asarray(again), np.asarray(_render(11, 400, 300, "uniform")[0]))
    csv_path = write_dataset(3, 5, tmp_path, shift="new-district")
    assert sorted(p.name for p in (tmp_path / "images").iterdir())[0] == "synth_5_new-district_00000.png"
    assert csv_path.read_text(encoding="utf-8").count("\n") == 4
    with pytest.raises(ValueError, match="unknown shift 'chalk'"):
        get_shift("chalk")
