"""Intervals of stated coverage for RAIL scores: split conformal prediction on the normalised error.

On a labelled calibration set, each dimension's nonconformity score is the normalised error
|label - RAIL score| / (RAIL std + eps): the model's own spread sets the width, so an artwork
the model is unsure of gets a wider interval. The stored quantile q is the
ceil((n + 1) * level)-th smallest of the n errors (the finite-sample split-conformal
quantile), so for a new artwork exchangeable with the calibration set
P(label in [score - q (std + eps), score + q (std + eps)]) >= level. The interval is clipped
to the rubric's levels (1..5). A deployment set stores its `Calibration` (written by
`kidsart calibrate`); each dimension's entry names the adapter version it was measured on
and applies to that version only. Without one, answers carry no interval: never a made-up one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from pydantic import Field

from adapters.datafiles import StrictModel
from adapters.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_LEVEL = 0.9
DEFAULT_EPS = 0.05  # keeps a very sure score's interval from shrinking to a point


class DimensionCalibration(StrictModel):
    """One dimension's conformal quantile, for one adapter version."""

    adapter: str = Field(description="The adapter (name@version) the quantile was measured on.")
    quantile: float = Field(ge=0.0, description="The split-conformal quantile of |label - score| / (std + eps).")
    n: int = Field(ge=1, description="Calibration artworks with a label for this dimension.")


class Calibration(StrictModel):
    """A deployment set's intervals: their coverage level, the eps of the normalisation, a quantile per dimension."""

    level: float = Field(gt=0.0, lt=1.0, description="Coverage the intervals are built for (e.g. 0.9).")
    eps: float = Field(gt=0.0, le=1.0, description="Added to the RAIL std in the normalised error.")
    data_hash: str = Field(description="Hash of the calibration set (labels and images).")
    dimensions: dict[str, DimensionCalibration] = Field(description="Dimension -> its quantile.")

    def applying_to(self, adapters: dict[str, str]) -> Calibration | None:
        """Only the dimensions calibrated on the adapter versions served (`adapters`: dimension -> name@version);
        a dimension whose adapter changed since is left without an interval (warned), never given a stale one."""
        kept = {}
        for dim, entry in self.dimensions.items():
            if adapters.get(dim) == entry.adapter:
                kept[dim] = entry
            elif dim in adapters:
                log.warning(
                    "calibration of %s was measured on %s, the deployment serves %s: no interval for it until "
                    "`kidsart calibrate` is run again",
                    dim,
                    entry.adapter,
                    adapters[dim],
                )
        return self.model_copy(update={"dimensions": kept}) if kept else None


def conformal_quantile(errors: Sequence[float], level: float) -> float:
    """The ceil((n + 1) level)-th smallest error: the split-conformal quantile for coverage `level`."""
    n = len(errors)
    rank = math.ceil((n + 1) * level - 1e-9)  # 20 x 0.9 is 18.000000000000004 in floats: still the 18th
    if rank > n:
        need = math.ceil(level / (1 - level) - 1e-9)
        raise ConfigError(f"coverage {level} needs at least {need} calibration artworks per dimension, found {n}")
    return float(sorted(errors)[rank - 1])


def normalised_error(label: float, score: float, std: float, eps: float) -> float:
    return abs(label - score) / (std + eps)


def calibrate(
    labels: dict[str, list[float | None]],
    scores: list[dict[str, dict]],
    *,
    level: float = DEFAULT_LEVEL,
    eps: float = DEFAULT_EPS,
    data_hash: str,
) -> Calibration:
    """Each dimension's quantile from the labels (None: not labelled) and the scores (per artwork: dimension ->
    {score, std, adapter}) of the calibration set."""
    dimensions = {}
    for dim, column in labels.items():
        errors = [
            normalised_error(label, s[dim]["score"], s[dim]["std"], eps)
            for label, s in zip(column, scores, strict=True)
            if label is not None
        ]
        adapters = {s[dim]["adapter"] for s in scores}
        if len(adapters) != 1:
            raise ConfigError(f"the calibration scores of {dim} come from several adapters: {sorted(adapters)}")
        dimensions[dim] = DimensionCalibration(
            adapter=adapters.pop(), quantile=conformal_quantile(errors, level), n=len(errors)
        )
    return Calibration(level=level, eps=eps, data_hash=data_hash, dimensions=dimensions)


def interval(
    score: float, std: float, entry: DimensionCalibration, calibration: Calibration, levels: Sequence[float]
) -> list[float]:
    """[low, high]: score -/+ quantile x (std + eps), clipped to the rubric's levels."""
    half = entry.quantile * (std + calibration.eps)
    return [max(min(levels), score - half), min(max(levels), score + half)]


def with_interval(dim: str, entry: dict, calibration: Calibration | None, levels: Sequence[float]) -> dict:
    """A dimension's score entry ({score, probs, std, adapter, ...}) with `interval` and `interval_level` when the
    deployment is calibrated for this dimension and adapter; unchanged otherwise."""
    if calibration is None:
        return entry
    found = calibration.dimensions.get(dim)
    if found is None or found.adapter != entry.get("adapter"):
        return entry
    return {
        **entry,
        "interval": interval(entry["score"], entry["std"], found, calibration, levels),
        "interval_level": calibration.level,
    }


def covered(label: float, bounds: Sequence[float]) -> bool:
    return bounds[0] <= label <= bounds[1]
