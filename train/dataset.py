"""Loading and validating KidsArtBench-format datasets.

A dataset is a CSV with a `name` column (image file name), one integer column per
rubric dimension holding a level of the rubric, optional `grade` and
`description` columns, and a folder of images. Loading validates everything up
front and raises `DatasetError` listing the offending rows: a missing or
unreadable image, a score outside the rubric's levels, a missing value. A default
score is never substituted.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import DatasetError
from adapters.rubric import Rubric

log = logging.getLogger(__name__)

MAX_LISTED = 20


@dataclass(frozen=True)
class Sample:
    """One artwork: image path, scores per dimension, optional grade and description."""

    name: str
    image_path: Path
    scores: dict[str, int]
    grade: int | str | None = None  # a number, or the text of a district folder (e.g. "Klasse 3b")
    description: str | None = None
    comment: str | None = None


@dataclass
class Dataset:
    """A validated dataset for one rubric (possibly a subset of its dimensions)."""

    rubric: Rubric
    dimensions: list[str]
    samples: list[Sample]
    csv_path: Path
    images_dir: Path
    _hash: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def has_grades(self) -> bool:
        return any(s.grade is not None for s in self.samples)

    def content_hash(self) -> str:
        """sha256 over the CSV bytes and each referenced image's name and bytes, in row order."""
        if self._hash is None:
            digest = hashlib.sha256(self.csv_path.read_bytes())
            for sample in self.samples:
                digest.update(sample.name.encode())
                digest.update(b"\0")
                digest.update(sample.image_path.read_bytes())
            self._hash = "sha256:" + digest.hexdigest()
        return self._hash

    def split(self, val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
        """Deterministic train/validation split: a hash of (seed, name) decides each sample."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        train, val = [], []
        for sample in self.samples:
            h = int.from_bytes(hashlib.sha256(f"{seed}:{sample.name}".encode()).digest()[:8], "big") / 2**64
            (val if h < val_fraction else train).append(sample)
        if val_fraction > 0 and not val and len(train) > 1:
            val.append(train.pop())
        return train, val


def _fail(problem: str, rows: list[str]) -> None:
    listed = rows[:MAX_LISTED]
    more = f" ... and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
    raise DatasetError(f"{problem} in {len(rows)} row(s): " + "; ".join(listed) + more)


def _read_table(csv_path: Path, images_dir: Path, rubric: Rubric, dims: list[str], require_comment: bool):
    """The CSV as strings, with the columns the rubric needs; DatasetError naming what is missing."""
    import pandas as pd

    if not csv_path.is_file():
        raise DatasetError(f"dataset CSV {csv_path} does not exist")
    if not images_dir.is_dir():
        raise DatasetError(f"image folder {images_dir} does not exist")
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"dataset CSV {csv_path} cannot be parsed: {exc}") from exc
    missing_cols = [c for c in ["name", *dims, *(["comment"] if require_comment else [])] if c not in frame.columns]
    if missing_cols:
        raise DatasetError(
            f"dataset CSV {csv_path} lacks column(s) {missing_cols} (rubric {rubric.name!r} needs name + {dims})"
        )
    if frame.empty:
        raise DatasetError(f"dataset CSV {csv_path} has no rows")
    return frame


def _row_scores(
    row, dims: list[str], levels: set[int], row_problems: list[str], allow_unlabelled: bool = False
) -> dict[str, int]:
    """The row's label per dimension; each missing (unless `allow_unlabelled`: a blank cell is then "not
    labelled"), non-numeric or off-scale one is added to `row_problems`."""
    scores: dict[str, int] = {}
    for dim in dims:
        raw = str(row[dim]).strip()
        if raw == "":
            if not allow_unlabelled:
                row_problems.append(f"{dim} is missing")
            continue
        try:
            value = float(raw)
        except ValueError:
            row_problems.append(f"{dim}={raw!r} is not a number")
            continue
        if not value.is_integer() or int(value) not in levels:
            row_problems.append(f"{dim}={raw} is outside the rubric's levels {sorted(levels)}")
            continue
        scores[dim] = int(value)
    return scores


def _grade(raw: str) -> int | str | None:
    """A grade cell: a number as int, other text (a district's folder name) kept as it is, blank as None."""
    if raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        return raw
    return int(value) if value.is_integer() else raw


def _check_image(path: Path, row_problems: list[str]) -> None:
    from PIL import Image

    if not path.is_file():
        row_problems.append(f"image {path} is missing")
        return
    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means unreadable
        row_problems.append(f"image {path} is unreadable ({type(exc).__name__})")


def load_dataset(
    csv_path: str | Path,
    images_dir: str | Path,
    rubric: Rubric,
    dimensions: list[str] | None = None,
    *,
    check_images: bool = True,
    require_comment: bool = False,
    allow_unlabelled: bool = False,
) -> Dataset:
    """Read and validate a dataset; every problem found is listed with its CSV row number (header = row 1).

    `require_comment` (feedback training and evaluation): the CSV must have a non-empty `comment` per row.
    `allow_unlabelled` (training): a blank dimension cell means the row does not label that dimension (a teachers'
    review export labels what they set); a row labelling no dimension is still an error.
    """
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    dims = [d.name for d in rubric.select(dimensions)]
    frame = _read_table(csv_path, images_dir, rubric, dims, require_comment)

    levels = set(rubric.levels)
    problems: list[str] = []
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for index, row in frame.iterrows():
        rownum = int(index) + 2
        name = str(row["name"]).strip()
        row_problems = []
        if not name:
            row_problems.append("empty name")
        elif name in seen:
            row_problems.append(f"duplicate name (also row {seen[name]})")
        else:
            seen[name] = rownum
        scores = _row_scores(row, dims, levels, row_problems, allow_unlabelled)
        if allow_unlabelled and not scores and not row_problems:
            row_problems.append(f"no dimension is labelled (of {dims})")
        grade = _grade(str(row["grade"]).strip()) if "grade" in frame.columns else None
        description = str(row["description"]).strip() if "description" in frame.columns else ""
        comment = str(row["comment"]).strip() if "comment" in frame.columns else ""
        if require_comment and not comment:
            row_problems.append("comment is empty")
        path = images_dir / name
        if name and check_images:
            _check_image(path, row_problems)
        if row_problems:
            problems.append(f"row {rownum} ({name or '?'}): " + ", ".join(row_problems))
            continue
        samples.append(
            Sample(
                name=name,
                image_path=path,
                scores=scores,
                grade=grade,
                description=description or None,
                comment=comment or None,
            )
        )
    if problems:
        _fail(f"dataset {csv_path} is invalid", problems)
    log.info("loaded %d samples from %s (%d dimensions)", len(samples), csv_path, len(dims))
    return Dataset(rubric=rubric, dimensions=dims, samples=samples, csv_path=csv_path, images_dir=images_dir)
