"""Teachers' reviews of a district run, kept safely: `RUN_DIR/review.sqlite` (SQLite, WAL mode), append-only.

Each save of an artwork's review is one transaction adding one `saves` row (who, when,
"confirmed as is", the edited feedback) and one `levels` row per dimension set (the level
chosen, beside the model's score and the adapter version that gave it). Nothing is updated
or deleted: the current value of a dimension is its latest row, and the whole history is
there for the export. An artwork's review has a `version`: 0 before any save, +1 per save.
A save names the version its page showed (`seen_version`); when another reviewer saved
meanwhile, it is refused with `ReviewConflict` carrying the newer values, so nothing is
overwritten silently. A save that returned is on disk (committed in WAL mode): a SIGKILL
of the app at any moment loses nothing saved.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, Field

from adapters.errors import InputError
from serve.sqlite_state import SqliteState

DB_NAME = "review.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS saves (
    artwork TEXT NOT NULL, version INTEGER NOT NULL, reviewer TEXT NOT NULL, at REAL NOT NULL,
    confirm INTEGER NOT NULL, feedback TEXT, PRIMARY KEY (artwork, version)
);
CREATE TABLE IF NOT EXISTS levels (
    artwork TEXT NOT NULL, version INTEGER NOT NULL, dimension TEXT NOT NULL, level INTEGER NOT NULL,
    model_score REAL, adapter TEXT, reviewer TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (artwork, version, dimension)
);
"""


class ReviewState(BaseModel):
    """An artwork's review as it stands: the latest level of each dimension set so far, the latest feedback."""

    version: int = Field(default=0, ge=0, description="0 before any save; +1 per save.")
    levels: dict[str, int] = Field(default_factory=dict, description="Dimension -> the level a teacher set.")
    feedback: str | None = Field(default=None, description="The feedback as a teacher last edited it.")
    confirmed: bool = Field(default=False, description="The last save confirmed the model's scores as they are.")
    reviewers: list[str] = Field(default_factory=list, description="Who saved, in order of their first save.")
    updated_at: float | None = Field(default=None, description="Unix time of the last save.")


class ReviewConflict(InputError):
    """A save from a page older than the artwork's review: the newer values are in `current`."""

    kind = "review_conflict"

    def __init__(self, message: str, current: ReviewState):
        super().__init__(message)
        self.current = current


class ReviewStore:
    def __init__(self, run_dir: Path):
        self.state = SqliteState(Path(run_dir) / DB_NAME, SCHEMA)

    def current(self, artwork: str) -> ReviewState:
        with self.state.transaction() as db:
            return self._current(db, artwork)

    @staticmethod
    def _current(db, artwork: str) -> ReviewState:
        saves = db.execute(
            "SELECT version, reviewer, at, confirm, feedback FROM saves WHERE artwork = ? ORDER BY version", (artwork,)
        ).fetchall()
        if not saves:
            return ReviewState()
        levels = {
            dim: level
            for dim, level in db.execute(
                "SELECT dimension, level FROM levels WHERE artwork = ? ORDER BY version", (artwork,)
            )
        }  # later versions overwrite earlier ones in the dict: the latest row of each dimension
        feedback = next((row[4] for row in reversed(saves) if row[4] is not None), None)
        reviewers = list(dict.fromkeys(row[1] for row in saves))
        last = saves[-1]
        return ReviewState(
            version=last[0],
            levels=levels,
            feedback=feedback,
            confirmed=bool(last[3]),
            reviewers=reviewers,
            updated_at=last[2],
        )

    def save(
        self,
        artwork: str,
        *,
        reviewer: str,
        seen_version: int,
        levels: dict[str, int],
        model: dict[str, tuple[float, str]],
        feedback: str | None = None,
        confirm: bool = False,
    ) -> ReviewState:
        """Append one save (levels: dimension -> 1..5; model: dimension -> (its score, adapter)); the new state,
        or ReviewConflict when `seen_version` is not the current version."""
        unknown = sorted(set(levels) - set(model))
        if unknown:
            raise InputError(f"artwork {artwork!r} has no model score for dimensions {unknown}")
        at = time.time()
        with self.state.transaction() as db:  # BEGIN IMMEDIATE: the version check and the insert are one step
            current = self._current(db, artwork)
            if seen_version != current.version:
                raise ReviewConflict(
                    f"artwork {artwork!r} was saved by {current.reviewers[-1] if current.reviewers else 'someone'} "
                    f"since your page was loaded (version {current.version}, your page had {seen_version})",
                    current,
                )
            version = current.version + 1
            db.execute(
                "INSERT INTO saves (artwork, version, reviewer, at, confirm, feedback) VALUES (?, ?, ?, ?, ?, ?)",
                (artwork, version, reviewer, at, int(confirm), feedback),
            )
            db.executemany(
                "INSERT INTO levels (artwork, version, dimension, level, model_score, adapter, reviewer, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(artwork, version, d, int(v), model[d][0], model[d][1], reviewer, at) for d, v in levels.items()],
            )
            return self._current(db, artwork)

    def versions(self) -> dict[str, int]:
        """Artwork -> its review's version, for every artwork saved at least once."""
        with self.state.transaction() as db:
            return dict(db.execute("SELECT artwork, MAX(version) FROM saves GROUP BY artwork"))

    def history(self) -> list[dict]:
        """Every save with its levels, oldest first (the JSONL export)."""
        with self.state.transaction() as db:
            saves = db.execute(
                "SELECT artwork, version, reviewer, at, confirm, feedback FROM saves ORDER BY at, artwork, version"
            ).fetchall()
            rows = db.execute("SELECT artwork, version, dimension, level, model_score, adapter FROM levels").fetchall()
        by_save: dict[tuple[str, int], dict] = {}
        for artwork, version, dim, level, score, adapter in rows:
            by_save.setdefault((artwork, version), {})[dim] = {"level": level, "model_score": score, "adapter": adapter}
        return [
            {
                "artwork": artwork,
                "version": version,
                "reviewer": reviewer,
                "at": at,
                "confirm": bool(confirm),
                "feedback": feedback,
                "levels": by_save.get((artwork, version), {}),
            }
            for artwork, version, reviewer, at, confirm, feedback in saves
        ]
