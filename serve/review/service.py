"""What the review app does, once, for its pages and its JSON API alike: the queue, an artwork's view, a save.

A save sets some dimensions to levels 1..5, may edit the feedback, or confirms the model's
scores as they are (each dimension not set otherwise is then recorded at the model's score
rounded to a level: an agreement is data too). It names the version its page showed; the
store refuses it with the newer values when someone saved meanwhile.
"""

from __future__ import annotations

from pydantic import Field

from adapters.datafiles import StrictModel
from adapters.errors import InputError
from serve.protocol import MAX_DESCRIPTION_CHARS
from serve.review.run import ReviewRun
from serve.review.store import ReviewState, ReviewStore

LEVELS = (1, 2, 3, 4, 5)


class ReviewRequest(StrictModel):
    """Body of POST /api/artworks/{id}/review (the artwork page's form sends the same fields)."""

    levels: dict[str, int] = Field(default_factory=dict, description="Dimension -> the level chosen, 1..5.")
    feedback: str | None = Field(
        default=None, max_length=MAX_DESCRIPTION_CHARS, description="The feedback as edited (None: unchanged)."
    )
    confirm: bool = Field(default=False, description="Confirm the model's scores as they are (for every other dim).")
    seen_version: int = Field(ge=0, description="The review version the page showed (0: never reviewed).")


class ReviewService:
    def __init__(self, run: ReviewRun, store: ReviewStore):
        self.run = run
        self.store = store

    def queue(self, **filters: str | None) -> list[dict]:
        """The queue's items in order, each with its review's version (0: to do)."""
        versions = self.store.versions()
        return [
            {
                "id": a.id,
                "key": a.key,
                "school": a.school,
                "grade": a.grade,
                "class_name": a.class_name,
                "unsureness": round(a.unsureness(filters.get("dimension") or None), 4),
                "version": versions.get(a.id, 0),
            }
            for a in self.run.queue(**filters)
        ]

    def artwork(self, artwork_id: str) -> dict:
        art = self.run.artwork(artwork_id)
        review = self.store.current(art.id)
        return {
            "id": art.id,
            "key": art.key,
            "school": art.school,
            "grade": art.grade,
            "class_name": art.class_name,
            "student_id": art.student_id,
            "description": art.description,
            "scores": {
                dim: {k: s[k] for k in ("score", "probs", "std", "interval", "interval_level", "adapter") if k in s}
                for dim, s in art.scores.items()
            },
            "feedback": art.feedback,
            "review": review.model_dump(),
            "version": review.version,
        }

    def save(self, artwork_id: str, reviewer: str, request: ReviewRequest) -> ReviewState:
        art = self.run.artwork(artwork_id)
        unknown = sorted(set(request.levels) - set(art.scores))
        if unknown:
            raise InputError(f"dimensions {unknown} are not scored in this run ({sorted(art.scores)})")
        bad = {d: v for d, v in request.levels.items() if v not in LEVELS}
        if bad:
            raise InputError(f"levels must be 1..5, got {bad}")
        if not request.levels and not request.confirm and request.feedback is None:
            raise InputError("nothing to save: set a level, edit the feedback, or confirm the scores as they are")
        levels = dict(request.levels)
        if request.confirm:
            for dim, score in art.scores.items():
                levels.setdefault(dim, nearest_level(score["score"]))
        return self.store.save(
            art.id,
            reviewer=reviewer,
            seen_version=request.seen_version,
            levels=levels,
            model={d: (s["score"], s.get("adapter", "")) for d, s in art.scores.items()},
            feedback=request.feedback,
            confirm=request.confirm,
        )

    def progress(self, items: list[dict]) -> dict:
        reviewed = sum(1 for item in items if item["version"] > 0)
        return {"reviewed": reviewed, "to_do": len(items) - reviewed, "total": len(items)}


def nearest_level(score: float) -> int:
    return min(LEVELS, key=lambda level: (abs(level - score), level))
