"""The contract between training and serving.

Rubrics, prompts, image normalisation, adapter manifests, deployment sets, model
profiles, the local base-model builder and the one expected-score (RAIL) function.
Nothing in this package imports `serve`, `train` or `loadtest`.
"""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
