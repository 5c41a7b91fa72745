"""A district run as the review app sees it: its scored artworks, their images, the queue's order and filters.

Read from the run folder the district job wrote: `run.json` (where the inputs are, the
dimensions, how the folders are named), the journal (each artwork's scores, with their
distributions, spreads and intervals, and its feedback) and the inputs themselves, found
again with the district job's own discovery (so a folder, a CSV manifest or an OpenAI batch
file all work, and an image is read as the job read it). Only artworks the model scored are
reviewed. Each artwork's id is a digest of its key: stable across restarts, safe in a URL.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pydantic import BaseModel, Field

from adapters.errors import InputError
from serve.district.inputs import DEFAULT_LEVELS, InputItem, discover, read_input_bytes
from serve.district.journal import read_journal
from serve.errors import UnsupportedRouteError

log = logging.getLogger(__name__)

RUN_META = "run.json"
FILTERS = ("school", "grade", "class_name", "dimension")


class RunNotFoundError(InputError):
    kind = "run_not_found"


class ArtworkNotFoundError(UnsupportedRouteError):  # 404
    kind = "artwork_not_found"


class Artwork(BaseModel):
    """One scored artwork of the run."""

    id: str = Field(description="Digest of the key: the artwork's address in the app.")
    key: str = Field(description="Its key in the run (path below the district folder, or custom_id).")
    student_id: str = ""
    school: str = ""
    grade: str = ""
    class_name: str = ""
    description: str = ""
    scores: dict[str, dict] = Field(description="Dimension -> {score, probs, std, adapter, interval?, ...}.")
    feedback: str | None = Field(default=None, description="The written feedback, when the run asked for it.")

    def unsureness(self, dimension: str | None = None) -> float:
        """How unsure the model is: the widest interval when calibrated, else the largest RAIL spread (std)."""
        chosen = [self.scores[dimension]] if dimension in self.scores else list(self.scores.values())
        if all("interval" in s for s in chosen):
            return max(s["interval"][1] - s["interval"][0] for s in chosen)
        return max(s["std"] for s in chosen)


def media_type(data: bytes) -> str:
    """The image's MIME type from its header (application/octet-stream when it names none)."""
    from PIL import Image

    from adapters.images import sniff_format

    return Image.MIME.get(sniff_format(data) or "", "application/octet-stream")


def artwork_id(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


class ReviewRun:
    """The scored artworks of one district run, in the run's order."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        meta_path = self.run_dir / RUN_META
        if not meta_path.is_file():
            raise RunNotFoundError(f"{self.run_dir} is not a district run folder (no {RUN_META})")
        self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.dimensions: list[str] = list(self.meta["dimensions"])
        records = read_journal(self.run_dir)
        discovery = discover(
            self.meta["input"],
            levels=tuple(self.meta.get("levels") or DEFAULT_LEVELS),
            input_format=self.meta.get("input_format", "auto"),
        )
        self._discovery, self._records = discovery, records
        self._report: str | None = None
        self._items: dict[str, InputItem] = {}
        self.artworks: dict[str, Artwork] = {}
        for item in discovery.items:
            record = records.get(item.key)
            if record is None or record.get("status") != "ok" or record.get("sha256") != item.sha256:
                continue  # not scored, an error row, or the file changed since it was scored
            art = Artwork(
                id=artwork_id(item.key),
                key=item.key,
                student_id=item.student_id,
                school=item.school,
                grade=item.grade,
                class_name=item.class_name,
                description=item.description,
                scores=record["scores"],
                feedback=(record.get("feedback") or {}).get("text"),
            )
            self.artworks[art.id] = art
            self._items[art.id] = item
        log.info(
            "review of %s: %d scored artworks of %d inputs", self.run_dir, len(self.artworks), len(discovery.items)
        )

    def artwork(self, artwork_id_: str) -> Artwork:
        found = self.artworks.get(artwork_id_)
        if found is None:
            raise ArtworkNotFoundError(f"no scored artwork {artwork_id_!r} in this run")
        return found

    def image(self, artwork_id_: str) -> bytes:
        self.artwork(artwork_id_)
        return read_input_bytes(self._items[artwork_id_])

    def report(self) -> str:
        """The run's report (the district job's), each card's name linking to its artwork page; rendered once."""
        if self._report is None:
            from functools import partial

            from adapters.rubric import load_rubric
            from serve.district.export import build_table
            from serve.district.report import render_report

            items = self._discovery.items
            rubric = load_rubric(self.meta.get("rubric") or "kidsartbench")
            frame = build_table(
                items, self._records, self.dimensions, rubric=rubric, feedback=bool(self.meta.get("feedback"))
            )
            self._report = render_report(
                frame,
                self.dimensions,
                paths={i.key: partial(read_input_bytes, i) if i.batch else i.path for i in items},
                title=f"District scores: {Path(self._discovery.source).name}",
                skipped=self._discovery.skipped,
                meta={"input": self._discovery.source},
                max_thumbnails=400,
                rubric=rubric,
                links={a.key: f"/artworks/{a.id}" for a in self.artworks.values()},
            )
        return self._report

    def choices(self) -> dict[str, list[str]]:
        """The values each filter can take (schools, grades, classes, dimensions)."""
        arts = self.artworks.values()
        return {
            "school": sorted({a.school for a in arts if a.school}),
            "grade": sorted({a.grade for a in arts if a.grade}),
            "class_name": sorted({a.class_name for a in arts if a.class_name}),
            "dimension": list(self.dimensions),
        }

    def queue(self, **filters: str | None) -> list[Artwork]:
        """The artworks matching the filters (school, grade, class_name, dimension), the most unsure first (for a
        chosen dimension: by that dimension's interval or spread); ties in the run's order."""
        unknown = sorted(set(filters) - set(FILTERS))
        if unknown:
            raise InputError(f"unknown filters {unknown}; use {list(FILTERS)}")
        dimension = filters.get("dimension") or None
        if dimension is not None and dimension not in self.dimensions:
            raise InputError(f"dimension {dimension!r} is not one of this run's {self.dimensions}")
        chosen = [
            a
            for a in self.artworks.values()
            if all(not filters.get(f) or getattr(a, f) == filters[f] for f in ("school", "grade", "class_name"))
        ]
        order = {a.id: i for i, a in enumerate(self.artworks.values())}
        return sorted(chosen, key=lambda a: (-a.unsureness(dimension), order[a.id]))
