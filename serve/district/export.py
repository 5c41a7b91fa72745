"""Turn the journal into `scores.csv` and `scores.parquet`: one row per input, in key order.

Columns: identifiers (`key`, `file`, `student_id`, `school`, `grade`, `class`,
`folder`, `description`, `sha256`, `size`, `duplicate_of`), `status` (ok / error /
pending), `error_type`, `error`, then per dimension `<dim>` (RAIL expected score),
`<dim>_std` and `<dim>_p1`..`<dim>_p5` (score-token probabilities), plus `mean_score`
(mean over the dimensions) and `adapters` (dim=name@version, ';'-separated).
Files are written to a temporary name and renamed, so a kill never leaves half a file.
"""

from __future__ import annotations

from pathlib import Path

from adapters.datafiles import atomic_write
from serve.district.inputs import InputItem

ID_COLUMNS = [
    "key",
    "file",
    "student_id",
    "school",
    "grade",
    "class",
    "folder",
    "description",
    "sha256",
    "size",
    "duplicate_of",
    "status",
    "error_type",
    "error",
]


def build_table(
    items: list[InputItem],
    records: dict[str, dict],
    dimensions: list[str],
    levels: int = 5,
    rubric=None,
    feedback: bool = False,
):
    """A pandas DataFrame with one row per input (pending if the journal has no current record).

    For a rubric with a points scale (`points_per_dimension`), also `<dimension>_points` columns and the
    total (e.g. `total_100`, only when every dimension of the rubric is in the table). With `feedback`
    (a run that asked for comments), a `feedback` column with each artwork's comment; the feedback
    adapter's label joins the `adapters` column."""
    import pandas as pd

    points = rubric is not None and rubric.points_per_dimension is not None
    total_name = rubric.total_name if points and set(rubric.dimension_names) <= set(dimensions) else None
    rows = []
    for item in sorted(items, key=lambda i: i.key):
        record = records.get(item.key)
        if record is not None and record.get("sha256", "") != item.sha256:
            record = None  # a result for other bytes under the same key: this input is pending again
        row = _identity_and_status(item, record)
        adapters = _score_columns(row, (record or {}).get("scores") or {}, dimensions, levels)
        comment = (record or {}).get("feedback") or {}
        if feedback:
            row["feedback"] = comment.get("text", "")
            if comment.get("adapter"):
                adapters.append(f"feedback={comment['adapter']}")
        row["adapters"] = ";".join(adapters)
        if points:
            _points_columns(row, rubric, dimensions, total_name)
        rows.append(row)
    columns = (
        ID_COLUMNS
        + [c for dim in dimensions for c in (dim, f"{dim}_std", *[f"{dim}_p{k}" for k in range(1, levels + 1)])]
        + ["mean_score", "adapters"]
    )
    if points:
        columns += [f"{dim}_points" for dim in dimensions] + ([total_name] if total_name else [])
    if feedback:
        columns.append("feedback")
    frame = pd.DataFrame(rows, columns=columns)
    frame["size"] = frame["size"].astype("int64")
    return frame


def _identity_and_status(item: InputItem, record: dict | None) -> dict:
    row = {
        "key": item.key,
        "file": Path(item.key.split("#")[0]).name,
        "student_id": item.student_id,
        "school": item.school,
        "grade": item.grade,
        "class": item.class_name,
        "folder": item.folder,
        "description": item.description,
        "sha256": item.sha256,
        "size": item.size,
        "duplicate_of": item.duplicate_of,
    }
    if record is None:
        row.update(status="pending", error_type="not_scored", error="no result in the journal yet; run with --resume")
    elif record["status"] == "ok":
        row.update(status="ok", error_type="", error="")
    else:
        row.update(status="error", error_type=record.get("error_type", "error"), error=record.get("error", ""))
    return row


def _score_columns(row: dict, scores: dict, dimensions: list[str], levels: int) -> list[str]:
    """Each dimension's score, std, interval (`_low`, `_high`: NaN without calibration) and level probabilities
    (NaN when absent) and the mean into `row`; the adapters' labels as `dim=label`."""
    import numpy as np

    values, adapters = [], []
    for dim in dimensions:
        value = scores.get(dim)
        if value is None:
            row[dim] = np.nan
            row[f"{dim}_std"] = row[f"{dim}_low"] = row[f"{dim}_high"] = np.nan
            for level in range(1, levels + 1):
                row[f"{dim}_p{level}"] = np.nan
            continue
        row[dim] = float(value["score"])
        row[f"{dim}_std"] = float(value.get("std", np.nan))
        low, high = value.get("interval") or (np.nan, np.nan)
        row[f"{dim}_low"], row[f"{dim}_high"] = float(low), float(high)
        probs = list(value.get("probs", []))
        for level in range(1, levels + 1):
            row[f"{dim}_p{level}"] = float(probs[level - 1]) if level <= len(probs) else np.nan
        values.append(row[dim])
        if value.get("adapter"):
            adapters.append(f"{dim}={value['adapter']}")
    row["mean_score"] = float(np.mean(values)) if values and row["status"] == "ok" else np.nan
    return adapters


def _points_columns(row: dict, rubric, dimensions: list[str], total_name: str | None) -> None:
    import numpy as np

    for dim in dimensions:
        row[f"{dim}_points"] = rubric.points(row[dim]) if not np.isnan(row[dim]) else np.nan
    if total_name:
        parts = [row[f"{dim}_points"] for dim in dimensions]
        row[total_name] = float(sum(parts)) if not any(np.isnan(parts)) else np.nan


def write_tables(frame, out_dir: Path) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    csv_path, parquet_path = out_dir / "scores.csv", out_dir / "scores.parquet"
    atomic_write(csv_path, lambda p: frame.to_csv(p, index=False, encoding="utf-8"))
    atomic_write(parquet_path, lambda p: frame.to_parquet(p, index=False, engine="pyarrow"))
    return csv_path, parquet_path
