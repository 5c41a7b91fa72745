"""The promotion gate: a new adapter set against the served one on a held-out set, before it is served.

`kidsart adapters promote NEW --url ROUTER --holdout CSV --holdout-images DIR` scores the
held-out artworks with the served set and with NEW (both in this process, with the reference
backend on the profile's base: the same scores the engines give, within the parity tolerance
of `kidsart bench`), and compares their mean Spearman over the dimensions. The interval is a
paired bootstrap over artworks (the same resampled artworks score both sets): the difference
new - old and its 95% percentile interval. NEW is refused (exit 2, the figures printed) when
the whole interval lies below zero, i.e. when it is lower beyond its bootstrap interval;
otherwise the router is asked to serve it (`POST /v1/admin/adapters/promote`, an admin key).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import BaseModel, Field

from adapters.errors import ConfigError

log = logging.getLogger(__name__)


class DimensionGate(BaseModel):
    old_srcc: float | None = Field(description="Spearman of the served set on this dimension (None: undefined).")
    new_srcc: float | None = Field(description="Spearman of the new set.")


class GateResult(BaseModel):
    """The gate's figures and verdict (written with --report)."""

    n: int = Field(description="Held-out artworks.")
    old_mean_srcc: float = Field(description="Mean Spearman over dimensions, served set.")
    new_mean_srcc: float = Field(description="Mean Spearman over dimensions, new set.")
    difference: float = Field(description="new - old.")
    ci_low: float = Field(description="2.5th percentile of the paired bootstrap difference.")
    ci_high: float = Field(description="97.5th percentile.")
    n_boot: int = Field(description="Bootstrap resamples (those with a defined Spearman everywhere).")
    accepted: bool = Field(description="False when ci_high < 0: the new set is lower beyond its interval.")
    dimensions: dict[str, DimensionGate]
    old: str = Field(description="The served set's YAML.")
    new: str = Field(description="The new set's YAML.")


def _mean_srcc(pred: dict[str, list[float]], labels: dict[str, list[int]], index=None) -> float:
    """Mean Spearman over the dimensions (of the artworks at `index`, a bootstrap resample); NaN if any is undefined."""
    import numpy as np

    from train.metrics import spearman

    values = []
    for dim, true in labels.items():
        p, t = np.asarray(pred[dim], dtype=float), np.asarray(true, dtype=float)
        values.append(spearman(p, t) if index is None else spearman(p[index], t[index]))
    return float(np.mean(values))


def paired_gate(
    old: dict[str, list[float]], new: dict[str, list[float]], labels: dict[str, list[int]], *, n_boot: int, seed: int
) -> tuple[float, float, float, float, int]:
    """(old mean SRCC, new mean SRCC, 2.5th and 97.5th percentile of the paired bootstrap difference, resamples)."""
    import numpy as np

    n = len(next(iter(labels.values())))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        index = rng.integers(0, n, n)
        diff = _mean_srcc(new, labels, index) - _mean_srcc(old, labels, index)
        if not np.isnan(diff):
            diffs.append(diff)
    if not diffs:
        raise ConfigError(
            "no bootstrap resample has a defined Spearman on every dimension: the held-out set is too small"
        )
    low, high = np.percentile(diffs, [2.5, 97.5])
    return _mean_srcc(old, labels), _mean_srcc(new, labels), float(low), float(high), len(diffs)


def run_gate(profile, old_path: Path, new_path: Path, holdout: Path, images: Path, *, n_boot: int, seed: int):
    """Score the held-out set with both sets (reference backend) and compare them."""
    from train.dataset import load_dataset
    from train.evaluate import deployment_of, score_reference
    from train.metrics import spearman

    old_set, new_set = deployment_of(profile, old_path), deployment_of(profile, new_path)
    dims = [d for d in old_set.dimensions if d in new_set.adapters]
    dataset = load_dataset(holdout, images, old_set.rubric, dims)
    labels = {d: [s.scores[d] for s in dataset.samples] for d in dims}
    predictions = {}
    for name, deployment in (("old", old_set), ("new", new_set)):
        scores = score_reference(dataset, profile, deployment)
        predictions[name] = {d: [float(s[d]["score"]) for s in scores] for d in dims}
    old_mean, new_mean, low, high, kept = paired_gate(
        predictions["old"], predictions["new"], labels, n_boot=n_boot, seed=seed
    )

    def defined(x: float) -> float | None:
        return None if x != x else round(x, 4)

    return GateResult(
        n=len(dataset),
        old_mean_srcc=old_mean,
        new_mean_srcc=new_mean,
        difference=new_mean - old_mean,
        ci_low=low,
        ci_high=high,
        n_boot=kept,
        accepted=not high < 0,
        dimensions={
            d: DimensionGate(
                old_srcc=defined(spearman(predictions["old"][d], labels[d])),
                new_srcc=defined(spearman(predictions["new"][d], labels[d])),
            )
            for d in dims
        },
        old=str(old_set.source),
        new=str(new_set.source),
    )


def gate_lines(result: GateResult) -> list[str]:
    """The figures as a reader sees them."""
    lines = [f"{'dimension':22s} {'served':>7s} {'new':>7s}"]
    for dim, gate in result.dimensions.items():
        old = "-" if gate.old_srcc is None else f"{gate.old_srcc:.3f}"
        new = "-" if gate.new_srcc is None else f"{gate.new_srcc:.3f}"
        lines.append(f"{dim:22s} {old:>7s} {new:>7s}")
    lines.append(
        f"mean SRCC on {result.n} held-out artworks: served {result.old_mean_srcc:.3f}, "
        f"new {result.new_mean_srcc:.3f}, "
        f"difference {result.difference:+.3f} (paired bootstrap 95% [{result.ci_low:+.3f}, {result.ci_high:+.3f}], "
        f"{result.n_boot} resamples)"
    )
    lines.append(
        "accepted: not lower beyond its bootstrap interval"
        if result.accepted
        else "REFUSED: the new set's mean SRCC is lower beyond its bootstrap interval"
    )
    return lines
