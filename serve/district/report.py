"""`report.html`: one self-contained page for teachers and the assessment office.

Everything is embedded (matplotlib figures as PNG data URLs, thumbnails as JPEG
data URLs, inline CSS, no scripts), so the file opens offline and can be mailed.
Sections: summary and mean scores per dimension; per-dimension histograms;
distributions per school and per grade (box plots and a heat map of means); a
radar chart for the top and the bottom artwork of each school; thumbnails with
their nine scores; failed files, duplicates and skipped files.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from adapters.datafiles import atomic_write

log = logging.getLogger(__name__)

THUMB_PX = 120
MAX_RADAR_SCHOOLS = 40


def _natural_key(text: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def _figure_data_url(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing glyphs for some scripts fall back to boxes
        fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnail(path: str | Callable[[], bytes]) -> str | None:
    """A thumbnail of the image file at `path`, or of the bytes `path()` gives (an OpenAI batch line's image)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(path()) if callable(path) else path) as image:
                image.seek(0)
                image.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))
                image = image.convert("RGB")
                image.thumbnail((THUMB_PX, THUMB_PX))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=70)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    except Exception:  # noqa: BLE001 - any unreadable file just has no thumbnail
        return None


def _histograms(ok, dims):
    import matplotlib.pyplot as plt
    import numpy as np

    cols = 3
    rows = -(-len(dims) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3 * rows), squeeze=False)
    bins = np.linspace(1, 5, 33)
    for ax, dim in zip(axes.flat, dims, strict=False):
        values = ok[dim].dropna()
        ax.hist(values, bins=bins, color="#4c78a8", edgecolor="white")
        ax.set_title(f"{dim.replace('_', ' ')}  (mean {values.mean():.2f})" if len(values) else dim)
        ax.set_xlim(1, 5)
        ax.set_xlabel("score")
    for ax in list(axes.flat)[len(dims) :]:
        ax.axis("off")
    fig.tight_layout()
    return _figure_data_url(fig)


def _boxplots(ok, dims, column):
    import matplotlib.pyplot as plt

    groups = sorted({g for g in ok[column].unique()}, key=_natural_key)
    cols = 3
    rows = -(-len(dims) // cols)
    width = max(12, min(30, 0.5 * len(groups) * cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width, 3.3 * rows), squeeze=False)
    labels = [(g or "(none)")[:22] for g in groups]
    for ax, dim in zip(axes.flat, dims, strict=False):
        data = [ok.loc[ok[column] == g, dim].dropna().to_numpy() for g in groups]
        ax.boxplot(data, tick_labels=labels, showfliers=True)
        ax.set_title(dim.replace("_", " "))
        ax.set_ylim(0.9, 5.1)
        ax.tick_params(axis="x", labelrotation=40, labelsize=8)
    for ax in list(axes.flat)[len(dims) :]:
        ax.axis("off")
    fig.tight_layout()
    return _figure_data_url(fig)


def _heatmap(ok, dims, column):
    import matplotlib.pyplot as plt

    means = ok.groupby(column)[dims].mean()
    means = means.loc[sorted(means.index, key=_natural_key)]
    fig, ax = plt.subplots(figsize=(12, 0.45 * len(means) + 1.6))
    image = ax.imshow(means.to_numpy(), vmin=1, vmax=5, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(dims)), [d.replace("_", "\n") for d in dims], fontsize=8)
    ax.set_yticks(range(len(means)), [(g or "(none)")[:30] for g in means.index], fontsize=8)
    for i in range(len(means)):
        for j in range(len(dims)):
            value = means.iat[i, j]
            ax.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 3.2 else "black"
            )
    fig.colorbar(image, ax=ax, label="mean score")
    fig.tight_layout()
    return _figure_data_url(fig)


def _radars(ok, dims):
    import matplotlib.pyplot as plt
    import numpy as np

    schools = sorted(ok["school"].unique(), key=_natural_key)[:MAX_RADAR_SCHOOLS]
    angles = np.linspace(0, 2 * np.pi, len(dims), endpoint=False)
    closed = np.concatenate([angles, angles[:1]])
    cells = []
    for school in schools:
        part = ok[ok["school"] == school].sort_values(["mean_score", "key"], ascending=[False, True])
        picks = [("top", part.iloc[0])]
        if len(part) > 1:
            picks.append(("bottom", part.iloc[-1]))
        cells.extend((school, which, row) for which, row in picks)
    if not cells:
        return []
    figures = []
    per_figure = 12
    for start in range(0, len(cells), per_figure):
        chunk = cells[start : start + per_figure]
        cols = 4
        rows = -(-len(chunk) // cols)
        fig, axes = plt.subplots(
            rows, cols, figsize=(13, 3.6 * rows), subplot_kw={"projection": "polar"}, squeeze=False
        )
        for ax, (school, which, row) in zip(axes.flat, chunk, strict=False):
            values = np.array([row[d] for d in dims], dtype=float)
            colour = "#2a9d8f" if which == "top" else "#e76f51"
            ax.plot(closed, np.concatenate([values, values[:1]]), color=colour)
            ax.fill(closed, np.concatenate([values, values[:1]]), color=colour, alpha=0.25)
            ax.set_ylim(0, 5)
            ax.set_xticks(angles, [d.replace("_", "\n")[:14] for d in dims], fontsize=6)
            ax.set_yticks([1, 2, 3, 4, 5], ["1", "", "3", "", "5"], fontsize=6)
            ax.set_title(
                f"{(school or '(none)')[:24]} - {which}\n{str(row['student_id'])[:24]} (mean {row['mean_score']:.2f})",
                fontsize=8,
            )
        for ax in list(axes.flat)[len(chunk) :]:
            ax.axis("off")
        fig.tight_layout()
        figures.append(_figure_data_url(fig))
    return figures


TEMPLATE = "report.html.j2"  # in serve/district/templates/


def _cards(
    frame,
    dims,
    paths: dict[str, str | Callable[[], bytes]],
    max_thumbnails: int,
    per_dim,
    total_name,
    links: dict[str, str] | None = None,
) -> tuple[list[dict], int]:
    """The artwork cards (at most max_thumbnails, evenly spread over the key order) and how many were scored;
    `links`: key -> where a card's name leads (the review app's artwork pages)."""
    ok = frame[frame["status"] == "ok"].sort_values("key")
    total = len(ok)
    if total > max_thumbnails:
        step = total / max_thumbnails
        ok = ok.iloc[[int(i * step) for i in range(max_thumbnails)]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        thumbs = list(pool.map(_thumbnail, [paths.get(k, "") for k in ok["key"]]))
    has_feedback = "feedback" in frame.columns
    cards = []
    for (_, row), thumb in zip(ok.iterrows(), thumbs, strict=True):
        cards.append(
            {
                "thumb": thumb,
                "key": row["key"],
                "link": (links or {}).get(row["key"]),
                "file": row["file"],
                "where": " / ".join(x for x in (row["school"], row["grade"], row["class"]) if x),
                "lines": [
                    {
                        "name": d.replace("_", " "),
                        "score": row[d],
                        "points": row[f"{d}_points"] if per_dim else None,
                        "bar_px": max(0.0, (row[d] - 1) / 4) * 60,
                    }
                    for d in dims
                ],
                "total": row[total_name] if total_name else None,
                "mean": row["mean_score"],
                "comment": str(row.get("feedback", "")) if has_feedback else "",
            }
        )
    return cards, total


def _summary_rows(ok, dims, total_name) -> list[list[str]]:
    rows = [
        [d.replace("_", " "), f"{ok[d].mean():.3f}", f"{ok[d].std():.3f}", f"{ok[d].min():.2f}", f"{ok[d].max():.2f}"]
        for d in dims
    ]
    if total_name:
        column = ok[total_name]
        rows.append(
            [
                f"total (0-{total_name.split('_')[-1]} points)",
                f"{column.mean():.2f}",
                f"{column.std():.2f}",
                f"{column.min():.1f}",
                f"{column.max():.1f}",
            ]
        )
    return rows


def _figures(ok, dims) -> dict:
    return {
        "histograms": _histograms(ok, dims),
        "school_heatmap": _heatmap(ok, dims, "school"),
        "school_boxplots": _boxplots(ok, dims, "school"),
        "grade_heatmap": _heatmap(ok, dims, "grade"),
        "grade_boxplots": _boxplots(ok, dims, "grade"),
        "radars": _radars(ok, dims),
    }


def write_report(
    frame,
    dims: list[str],
    out_path: Path,
    *,
    paths: dict[str, str | Callable[[], bytes]],
    title: str = "District scores",
    skipped: list[tuple[str, str]] | None = None,
    meta: dict | None = None,
    max_thumbnails: int = 400,
    rubric=None,
) -> Path:
    """Render the report from the scores table (export.build_table) and write it atomically.

    With the `rubric`, a points scale (e.g. creativity5's 0-20 per dimension) and its total are shown
    beside the RAIL scores; a `feedback` column (a run with --feedback) puts each comment on its card."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # e.g. CJK names: boxes in plots only
        document = render_report(
            frame,
            dims,
            paths=paths,
            title=title,
            skipped=skipped or [],
            meta=meta or {},
            max_thumbnails=max_thumbnails,
            rubric=rubric,
        )
    out_path = atomic_write(Path(out_path), lambda tmp: tmp.write_text(document, encoding="utf-8"))
    log.info("report written to %s (%.1f MB)", out_path, out_path.stat().st_size / 1e6)
    return out_path


def render_report(frame, dims, *, paths, title, skipped, meta, max_thumbnails, rubric=None, links=None) -> str:
    """The report's HTML: figures and cards computed here, laid out by the jinja2 template (autoescaped)."""
    import jinja2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "figure.max_open_warning": 0})
    ok = frame[frame["status"] == "ok"]
    failed = frame[frame["status"] != "ok"]
    duplicates = frame[frame["duplicate_of"] != ""]
    total_name = rubric.total_name if rubric is not None and rubric.total_name in frame.columns else None
    per_dim = rubric.points_per_dimension if rubric is not None else None
    facts = [
        ["inputs", len(frame)],
        ["scored", len(ok)],
        ["failed", len(failed)],
        ["duplicate files (same content as an earlier one)", len(duplicates)],
        ["files skipped (hidden, links outside the root, not images)", len(skipped)],
        ["schools", frame["school"].nunique()],
        ["grades", frame["grade"].nunique()],
    ] + [[k, v] for k, v in meta.items()]
    cards, scored = _cards(frame, dims, paths, max_thumbnails, per_dim, total_name, links) if len(ok) else ([], 0)
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("serve.district", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return environment.get_template(TEMPLATE).render(
        title=title,
        nav=["summary", "histograms", "schools", "grades", "radar", "thumbnails", "failed"],
        facts=facts,
        summary_rows=_summary_rows(ok, dims, total_name) if len(ok) else [],
        figures=_figures(ok, dims) if len(ok) else {},
        cards=cards,
        cards_shown=len(cards),
        cards_total=scored,
        points_per_dimension=per_dim,
        total_max=total_name.split("_")[-1] if total_name else None,
        failed=[[r.key, r.error_type, r.error] for r in failed.itertuples()],
        duplicates=[[r.key, r.duplicate_of] for r in duplicates.itertuples()],
        skipped=[list(x) for x in skipped],
    )
