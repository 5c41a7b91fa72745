"""Rubrics as data: a YAML file per rubric, loaded into a validated model.

A rubric names its dimensions, what each measures, what levels 1-5 look like, the
score tokens the model answers with, and whether the artwork's text description
belongs in the prompt. Training, the reference backend and the router all read
the same `Rubric` object, so a new rubric is a new YAML file, not new code.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters import PACKAGE_DIR
from adapters.datafiles import load_data_file, shipped_names
from adapters.errors import UnknownDimensionError

RUBRIC_DIR = PACKAGE_DIR / "rubrics"
DEFAULT_RUBRIC = "kidsartbench"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class Dimension(BaseModel):
    """One scored aspect of an artwork."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="Identifier: lower-case letters, digits and underscores; also the adapter's served name."
    )
    description: str = Field(description="One sentence: what this dimension measures.")
    levels: dict[int, str] = Field(description="What each score level looks like, keyed by level (1..5).")

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"dimension name {value!r} must match {_NAME.pattern}")
        return value

    @property
    def title(self) -> str:
        return self.name.replace("_", " ")


class Rubric(BaseModel):
    """A complete rubric: dimensions plus the score tokens the model answers with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Identifier of the rubric; also the served model name that scores all dimensions.")
    title: str = Field(description="Human-readable title.")
    score_tokens: list[str] = Field(description="The tokens that stand for levels 1..N, in level order.")
    uses_description: bool = Field(
        default=False, description="Whether the artwork's text description is put into the prompt."
    )
    dimensions: list[Dimension] = Field(description="The scored dimensions, in report order.", min_length=1)
    points_per_dimension: int | None = Field(
        default=None,
        ge=1,
        description="If set, each dimension is also reported on a 0..N points scale (level 1 -> 0, the top level "
        "-> N, linear in the RAIL score) and the points add up to a total named `total_<N x dimensions>`.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Rubric:
        if not _NAME.match(self.name):
            raise ValueError(f"rubric name {self.name!r} must match {_NAME.pattern}")
        if len(set(self.score_tokens)) != len(self.score_tokens) or len(self.score_tokens) < 2:
            raise ValueError("score_tokens must be at least two distinct tokens")
        names = [d.name for d in self.dimensions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate dimensions: {duplicates}")
        if self.name in names:
            raise ValueError(f"rubric name {self.name!r} must differ from every dimension name")
        expected = set(self.levels)
        for dim in self.dimensions:
            if set(dim.levels) != expected:
                raise ValueError(
                    f"dimension {dim.name!r} must describe levels {sorted(expected)}, has {sorted(dim.levels)}"
                )
        return self

    @property
    def levels(self) -> list[int]:
        return list(range(1, len(self.score_tokens) + 1))

    @property
    def total_max(self) -> int | None:
        """The most the points total can be (e.g. 100 for five dimensions of 20 points), if the rubric has points."""
        return None if self.points_per_dimension is None else self.points_per_dimension * len(self.dimensions)

    @property
    def total_name(self) -> str | None:
        """Name of the points total (e.g. `total_100` for five dimensions of 20 points), if the rubric has points."""
        if self.points_per_dimension is None:
            return None
        return f"total_{self.total_max}"

    def points(self, score: float) -> float:
        """A RAIL score on the rubric's points scale: (score - 1) x N / (levels - 1)."""
        if self.points_per_dimension is None:
            raise ValueError(f"rubric {self.name!r} has no points scale")
        return (score - 1) * self.points_per_dimension / (len(self.levels) - 1)

    def with_points(self, scores: dict[str, dict]) -> tuple[dict[str, dict], float | None]:
        """`scores` (dimension -> {"score": ...}) with each entry's `points`, and the total when every
        dimension of the rubric was scored (None otherwise, or when the rubric has no points)."""
        if self.points_per_dimension is None:
            return scores, None
        out = {dim: {**entry, "points": self.points(entry["score"])} for dim, entry in scores.items()}
        total = sum(out[d]["points"] for d in self.dimension_names) if set(self.dimension_names) <= set(out) else None
        return out, total

    @property
    def dimension_names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def dimension(self, name: str) -> Dimension:
        for dim in self.dimensions:
            if dim.name == name:
                return dim
        raise UnknownDimensionError(f"unknown dimension {name!r}; rubric {self.name!r} has {self.dimension_names}")

    def select(self, names: list[str] | None) -> list[Dimension]:
        """The dimensions to score: all of them for None/empty, else exactly those named (validated)."""
        if not names:
            return list(self.dimensions)
        unknown = [n for n in names if n not in self.dimension_names]
        if unknown:
            raise UnknownDimensionError(
                f"unknown dimension(s) {unknown}; rubric {self.name!r} has {self.dimension_names}"
            )
        seen: list[str] = []
        for n in names:
            if n not in seen:
                seen.append(n)
        return [self.dimension(n) for n in seen]


def load_rubric(name_or_path: str | Path = DEFAULT_RUBRIC) -> Rubric:
    """Load and validate a rubric by shipped name or by path."""
    return load_data_file(Rubric, "rubric file", name_or_path, RUBRIC_DIR)


def shipped_rubrics() -> list[str]:
    return shipped_names(RUBRIC_DIR)
