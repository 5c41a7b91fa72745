"""`kidsart calibrate`: measure a deployment set's intervals on a labelled calibration set and store them in it.

Scores the set with the reference backend (or a router serving the same adapters), computes
each dimension's split-conformal quantile (`adapters.calibration`) and writes the
`calibration` block into the deployment-set YAML; from then on every score answer of that
deployment carries `interval` and `interval_level` for the calibrated adapter versions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from adapters.calibration import DEFAULT_EPS, DEFAULT_LEVEL, Calibration, calibrate
from adapters.datafiles import atomic_write, read_yaml
from adapters.errors import ConfigError

log = logging.getLogger(__name__)


def calibrate_deployment(
    csv_path: Path,
    images_dir: Path,
    *,
    profile_name: str,
    deployment_path: Path | None,
    level: float = DEFAULT_LEVEL,
    eps: float = DEFAULT_EPS,
    backend: str = "reference",
    url: str = "http://127.0.0.1:8000",
    concurrency: int = 16,
) -> tuple[Path, Calibration]:
    """Calibrate the deployment set (default: the profile's) on the labelled set; returns (its file, the result)."""
    from adapters.profiles import load_profile
    from train.dataset import load_dataset
    from train.evaluate import deployment_of, score_dataset

    profile = load_profile(profile_name)
    deployment = deployment_of(profile, deployment_path)
    dataset = load_dataset(csv_path, images_dir, deployment.rubric, deployment.dimensions)
    scores = score_dataset(dataset, profile, deployment, backend, url=url, concurrency=concurrency)
    served = deployment.adapter_labels
    for dim in dataset.dimensions:
        used = {s[dim]["adapter"] for s in scores}
        if used != {served[dim]}:
            raise ConfigError(
                f"{dim} was scored by {sorted(used)}, the deployment set {deployment.source} has {served[dim]}: "
                "calibrate against a router serving this set"
            )
    labels = {d: [float(s.scores[d]) for s in dataset.samples] for d in dataset.dimensions}
    result = calibrate(labels, scores, level=level, eps=eps, data_hash=dataset.content_hash())
    store_calibration(Path(deployment.source), result)
    return Path(deployment.source), result


def store_calibration(path: Path, calibration: Calibration) -> None:
    """Write `calibration` into the deployment-set YAML at `path`, keeping its other keys as they are."""
    document = read_yaml(path, "deployment set")
    document["calibration"] = calibration.model_dump(mode="json")
    text = yaml.safe_dump(document, sort_keys=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    log.info("stored the calibration of %d dimensions in %s", len(calibration.dimensions), path)
