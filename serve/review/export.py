"""`kidsart review export RUN_DIR --format training-csv|label-studio|jsonl --out FILE`: the teachers' reviews out.

- `training-csv`: one row per reviewed artwork in the format `kidsart train` reads (`name`,
  one column per dimension, `grade`, `description`, `comment`): each dimension's current level
  as the teachers set it (confirmed ones included), blank where no teacher set it (not
  labelled); the feedback as edited in `comment`; who saved it in `reviewers` (';'-separated; continued
  training counts them). The images are copied beside it
  (`<FILE stem>-images/`, named by artwork id), so `kidsart train --data FILE --images
  <FILE stem>-images` reads the export as it is, whatever the run's input was.
- `label-studio`: Label Studio tasks (its JSON import format): `data` with the image and the
  artwork's identifiers, `predictions` with the model's levels (rounded scores, and the
  adapter versions as `model_version`) and `annotations` with the teachers' current levels;
  a labeling config for the project is written beside (`<FILE stem>.label-config.xml`).
- `jsonl`: every save, oldest first, with its levels, the model's scores and adapters, the
  reviewer and the time: the full history.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from xml.sax.saxutils import quoteattr

from adapters.datafiles import atomic_write
from adapters.errors import ConfigError
from serve.review.run import ReviewRun, media_type
from serve.review.service import nearest_level
from serve.review.store import ReviewStore

log = logging.getLogger(__name__)

FORMATS = ("training-csv", "label-studio", "jsonl")


def _extension(data: bytes) -> str:
    return {
        "image/png": ".png",
        "image/jpeg": ".jpg",
        "image/webp": ".webp",
        "image/gif": ".gif",
        "image/bmp": ".bmp",
        "image/tiff": ".tif",
    }.get(media_type(data), ".img")


def _write_images(run: ReviewRun, ids: list[str], folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for artwork_id in ids:
        data = run.image(artwork_id)
        names[artwork_id] = artwork_id + _extension(data)
        (folder / names[artwork_id]).write_bytes(data)
    return names


def export_reviews(run_dir: Path, fmt: str, out: Path) -> list[Path]:
    """Write the export; returns the files written."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; use one of {list(FORMATS)}")
    store = ReviewStore(run_dir)
    if fmt == "jsonl":
        text = "".join(json.dumps(save, ensure_ascii=False) + "\n" for save in store.history())
        atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return [out]
    run = ReviewRun(run_dir)
    reviewed = [a for a in run.artworks.values() if store.current(a.id).version > 0]
    images = out.parent / f"{out.stem}-images"
    names = _write_images(run, [a.id for a in reviewed], images)
    if fmt == "training-csv":
        return [_training_csv(run, store, reviewed, names, out), images]
    return [*_label_studio(run, store, reviewed, names, images, out), images]


def _training_csv(run: ReviewRun, store: ReviewStore, reviewed, names: dict[str, str], out: Path) -> Path:
    def write(tmp: Path) -> None:
        with Path(tmp).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            extra = ["grade", "description", "comment", "school", "class", "reviewers"]
            writer.writerow(["name", *run.dimensions, *extra])
            for art in reviewed:
                state = store.current(art.id)
                comment = state.feedback if state.feedback is not None else ""
                writer.writerow(
                    [
                        names[art.id],
                        *(state.levels.get(d, "") for d in run.dimensions),
                        art.grade,
                        art.description,
                        comment,
                        art.school,
                        art.class_name,
                        ";".join(dict.fromkeys(state.reviewers)),
                    ]
                )

    atomic_write(out, write)
    log.info("exported %d reviewed artworks to %s", len(reviewed), out)
    return out


def _choices(dim: str, level: int) -> dict:
    return {"from_name": dim, "to_name": "image", "type": "choices", "value": {"choices": [str(level)]}}


def _label_studio(run: ReviewRun, store: ReviewStore, reviewed, names, images: Path, out: Path) -> list[Path]:
    tasks = []
    for art in reviewed:
        state = store.current(art.id)
        annotation = [_choices(d, v) for d, v in state.levels.items()]
        if state.feedback is not None:
            annotation.append(
                {"from_name": "feedback", "to_name": "image", "type": "textarea", "value": {"text": [state.feedback]}}
            )
        tasks.append(
            {
                "data": {
                    "image": f"{images.name}/{names[art.id]}",
                    "artwork": art.key,
                    "school": art.school,
                    "grade": art.grade,
                    "class": art.class_name,
                },
                "predictions": [
                    {
                        "model_version": ";".join(sorted({s.get("adapter", "") for s in art.scores.values()})),
                        "result": [_choices(d, nearest_level(s["score"])) for d, s in art.scores.items()],
                    }
                ],
                "annotations": [
                    {"completed_by": {"email": f"{r}@review.local"}, "result": annotation} for r in state.reviewers[-1:]
                ],
            }
        )
    text = json.dumps(tasks, ensure_ascii=False, indent=1)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    config = out.parent / f"{out.stem}.label-config.xml"
    blocks = "\n".join(
        f'  <Header value={quoteattr(d)}/>\n  <Choices name={quoteattr(d)} toName="image" choice="single">'
        + "".join(f'<Choice value="{level}"/>' for level in range(1, 6))
        + "</Choices>"
        for d in run.dimensions
    )
    xml = (
        f'<View>\n  <Image name="image" value="$image"/>\n{blocks}\n'
        '  <TextArea name="feedback" toName="image" editable="true"/>\n</View>\n'
    )
    config.write_text(xml, encoding="utf-8")
    return [out, config]
