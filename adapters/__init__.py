"""The contract between training and serving.

Rubrics, prompts, image normalisation, adapter manifests, deployment sets, model
profiles, the local base-model builder and the one expected-score (RAIL) function.
Nothing in this package imports `serve`, `train` or `loadtest`.
"""

from adapters.locations import PACKAGE_DIR

__all__ = ["PACKAGE_DIR"]
