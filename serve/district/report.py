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
import html
import io
import logging
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def _img(url: str, alt: str, css: str = "plot") -> str:
    return f'<img class="{css}" src="{url}" alt="{html.escape(alt)}">'


def _thumbnail(path: str) -> str | None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
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
    for ax, dim in zip(axes.flat, dims):
        values = ok[dim].dropna()
        ax.hist(values, bins=bins, color="#4c78a8", edgecolor="white")
        ax.set_title(f"{dim.replace('_', ' ')}  (mean {values.mean():.2f})" if len(values) else dim)
        ax.set_xlim(1, 5)
        ax.set_xlabel("score")
    for ax in list(axes.flat)[len(dims):]:
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
    for ax, dim in zip(axes.flat, dims):
        data = [ok.loc[ok[column] == g, dim].dropna().to_numpy() for g in groups]
        ax.boxplot(data, tick_labels=labels, showfliers=True)
        ax.set_title(dim.replace("_", " "))
        ax.set_ylim(0.9, 5.1)
        ax.tick_params(axis="x", labelrotation=40, labelsize=8)
    for ax in list(axes.flat)[len(dims):]:
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
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value < 3.2 else "black")
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
        chunk = cells[start:start + per_figure]
        cols = 4
        rows = -(-len(chunk) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(13, 3.6 * rows), subplot_kw={"projection": "polar"}, squeeze=False)
        for ax, (school, which, row) in zip(axes.flat, chunk):
            values = np.array([row[d] for d in dims], dtype=float)
            colour = "#2a9d8f" if which == "top" else "#e76f51"
            ax.plot(closed, np.concatenate([values, values[:1]]), color=colour)
            ax.fill(closed, np.concatenate([values, values[:1]]), color=colour, alpha=0.25)
            ax.set_ylim(0, 5)
            ax.set_xticks(angles, [d.replace("_", "\n")[:14] for d in dims], fontsize=6)
            ax.set_yticks([1, 2, 3, 4, 5], ["1", "", "3", "", "5"], fontsize=6)
            ax.set_title(f"{(school or '(none)')[:24]} - {which}\n{str(row['student_id'])[:24]} (mean {row['mean_score']:.2f})",
                         fontsize=8)
        for ax in list(axes.flat)[len(chunk):]:
            ax.axis("off")
        fig.tight_layout()
        figures.append(_figure_data_url(fig))
    return figures


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin-bottom:4px} h2{border-bottom:2px solid #4c78a8;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#eef3f8} .num{text-align:right;font-variant-numeric:tabular-nums}
img.plot{max-width:100%;display:block;margin:8px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{width:220px;border:1px solid #ddd;border-radius:6px;padding:6px;font-size:11px;background:#fafafa}
.card img{width:120px;height:auto;display:block;margin:0 auto 4px} .card .name{font-weight:600;word-break:break-all}
.card table{width:100%;font-size:10px} .card td{padding:1px 3px;border:none}
.bar{display:inline-block;height:8px;background:#4c78a8;vertical-align:middle}
.error{color:#b00020} .muted{color:#666}
.feedback{margin-top:4px;padding:4px;border-left:3px solid #2a9d8f;background:#fff;font-size:10.5px;line-height:1.35}
"""


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{html.escape(str(c))}</td>' if i in numeric else f"<td>{html.escape(str(c))}</td>"
                         for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _thumbnail_cards(frame, dims, paths: dict[str, str], max_thumbnails: int, rubric=None) -> tuple[str, str]:
    ok = frame[frame["status"] == "ok"].sort_values("key")
    note = ""
    if len(ok) > max_thumbnails:
        step = len(ok) / max_thumbnails
        ok = ok.iloc[[int(i * step) for i in range(max_thumbnails)]]
        note = f"<p class='muted'>Showing {max_thumbnails} of the scored artworks, evenly spread over the key order.</p>"
    with ThreadPoolExecutor(max_workers=4) as pool:
        thumbs = list(pool.map(_thumbnail, [paths.get(k, "") for k in ok["key"]]))
    cards = []
    per_dim = rubric.points_per_dimension if rubric is not None else None
    total_name = rubric.total_name if rubric is not None and rubric.total_name in frame.columns else None
    for (_, row), thumb in zip(ok.iterrows(), thumbs):
        lines = "".join(
            f"<tr><td>{html.escape(d.replace('_', ' '))}</td><td class='num'>{row[d]:.2f}</td>"
            + (f"<td class='num'>{row[f'{d}_points']:.1f}/{per_dim}</td>" if per_dim else "")
            + f"<td><span class='bar' style='width:{max(0.0, (row[d] - 1) / 4) * 60:.0f}px'></span></td></tr>"
            for d in dims
        )
        summary_row = (f"<tr><td><b>total</b></td><td></td><td class='num'><b>{row[total_name]:.1f}/{total_name.split('_')[-1]}</b></td><td></td></tr>"
                       if total_name else
                       f"<tr><td><b>mean</b></td><td class='num'><b>{row['mean_score']:.2f}</b></td><td></td></tr>")
        comment = row.get("feedback", "") if "feedback" in frame.columns else ""
        comment_html = f"<div class='feedback'>{html.escape(str(comment))}</div>" if comment else ""
        image = f'<img src="{thumb}" alt="{html.escape(row["key"])}">' if thumb else "<p class='muted'>(no preview)</p>"
        where = " / ".join(x for x in (row["school"], row["grade"], row["class"]) if x)
        cards.append(
            f"<div class='card'>{image}<div class='name'>{html.escape(row['file'])}</div>"
            f"<div class='muted'>{html.escape(where)}</div><table>{lines}{summary_row}</table>{comment_html}</div>"
        )
    return note + "<div class='cards'>" + "".join(cards) + "</div>", str(len(cards))


def write_report(frame, dims: list[str], out_path: Path, *, paths: dict[str, str], title: str = "District scores",
                 skipped: list[tuple[str, str]] | None = None, meta: dict | None = None, max_thumbnails: int = 400,
                 rubric=None) -> Path:
    """Render the report from the scores table (export.build_table) and write it atomically.

    With the `rubric`, a points scale (e.g. creativity5's 0-20 per dimension) and its total are shown
    beside the RAIL scores; a `feedback` column (a run with --feedback) puts each comment on its card."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")  # e.g. CJK names: boxes in plots only
        return _write_report(frame, dims, out_path, paths=paths, title=title, skipped=skipped, meta=meta,
                             max_thumbnails=max_thumbnails, rubric=rubric)


def _write_report(frame, dims, out_path, *, paths, title, skipped, meta, max_thumbnails, rubric=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "figure.max_open_warning": 0})
    skipped = skipped or []
    meta = meta or {}
    ok = frame[frame["status"] == "ok"]
    failed = frame[frame["status"] != "ok"]
    duplicates = frame[frame["duplicate_of"] != ""]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    facts = [
        ["inputs", len(frame)], ["scored", len(ok)], ["failed", len(failed)],
        ["duplicate files (same content as an earlier one)", len(duplicates)],
        ["files skipped (hidden, links outside the root, not images)", len(skipped)],
        ["schools", frame["school"].nunique()], ["grades", frame["grade"].nunique()],
    ] + [[k, v] for k, v in meta.items()]
    parts.append(_table(["", "value"], facts, numeric={1}))
    nav = ["summary", "histograms", "schools", "grades", "radar", "thumbnails", "failed"]
    parts.insert(1, "<p>" + " &middot; ".join(f"<a href='#{n}'>{n}</a>" for n in nav) + "</p>")
    parts.append("<h2 id='summary'>Mean scores</h2>")
    if len(ok):
        rows = [[d.replace("_", " "), f"{ok[d].mean():.3f}", f"{ok[d].std():.3f}", f"{ok[d].min():.2f}", f"{ok[d].max():.2f}"]
                for d in dims]
        total_name = rubric.total_name if rubric is not None and rubric.total_name in ok.columns else None
        if total_name:
            column = ok[total_name]
            rows.append([f"total (0-{total_name.split('_')[-1]} points)", f"{column.mean():.2f}", f"{column.std():.2f}",
                         f"{column.min():.1f}", f"{column.max():.1f}"])
        parts.append(_table(["dimension", "mean", "sd", "min", "max"], rows, numeric={1, 2, 3, 4}))
        parts.append("<h2 id='histograms'>Score distribution per dimension</h2>")
        parts.append(_img(_histograms(ok, dims), "histograms of the scores per dimension"))
        parts.append("<h2 id='schools'>Per school</h2>")
        parts.append(_img(_heatmap(ok, dims, "school"), "mean score per school and dimension"))
        parts.append(_img(_boxplots(ok, dims, "school"), "score distributions per school"))
        parts.append("<h2 id='grades'>Per grade</h2>")
        parts.append(_img(_heatmap(ok, dims, "grade"), "mean score per grade and dimension"))
        parts.append(_img(_boxplots(ok, dims, "grade"), "score distributions per grade"))
        parts.append("<h2 id='radar'>Top and bottom artwork of each school</h2>")
        parts.append("<p class='muted'>By mean score over the dimensions; green: top, orange: bottom.</p>")
        parts.extend(_img(url, "radar charts") for url in _radars(ok, dims))
        parts.append("<h2 id='thumbnails'>Artworks and their scores</h2>")
        cards, _ = _thumbnail_cards(frame, dims, paths, max_thumbnails, rubric)
        parts.append(cards)
    else:
        parts.append("<p class='error'>No artwork was scored.</p>")
    parts.append(f"<h2 id='failed'>Failed files ({len(failed)})</h2>")
    if len(failed):
        parts.append(_table(["file", "error type", "message"],
                            [[r.key, r.error_type, r.error] for r in failed.itertuples()]))
    else:
        parts.append("<p>None.</p>")
    parts.append(f"<h2>Duplicates ({len(duplicates)})</h2>")
    if len(duplicates):
        parts.append(_table(["file", "same content as"], [[r.key, r.duplicate_of] for r in duplicates.itertuples()]))
    parts.append(f"<h2>Skipped files ({len(skipped)})</h2>")
    if skipped:
        parts.append(_table(["path", "reason"], [list(s) for s in skipped]))
    document = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>"
    )
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(document, encoding="utf-8")
    tmp.replace(out_path)
    log.info("report written to %s (%.1f MB)", out_path, out_path.stat().st_size / 1e6)
    return out_path
