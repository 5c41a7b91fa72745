"""A broken trainer fails CI: one dimension, trained briefly on the committed base, must learn its synthetic rule.

Held-out Spearman (64 images of another seed) of the trained adapter must exceed
THRESHOLD and beat the untrained adapter by MARGIN. Measured: see MEASURED. Float
results of training differ slightly across CPUs (the committed adapters' validation
Spearman moved by at most 0.02 between an AVX-512 and an AVX2 machine), so the
thresholds sit well below what was measured (0.38 of Spearman below). color_contrast
is read at 0.96 by the committed adapters (docs/training.md, "Honest status") and learns within
3 short epochs; the test checks the trainer, not how well the base reads the other
dimensions.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # `make test-unit` leaves it out; `make test` runs it

DIMENSION = "color_contrast"
THRESHOLD = 0.5
MARGIN = 0.2
MEASURED = "trained 0.880, untrained 0.130 (2-core AMD EPYC, AVX2 only, 141 s while another job shared the CPU)"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from train.synth import write_dataset

    root = tmp_path_factory.mktemp("learn")
    train_csv = write_dataset(192, seed=4242, out_dir=root / "train")
    test_csv = write_dataset(64, seed=4243, out_dir=root / "test")
    return root, train_csv, test_csv


def _held_out_srcc(tiny_profile, adapter_dirs, test_csv, tmp_path) -> float:
    from adapters.manifest import read_base_ref, write_deployment
    from train.evaluate import evaluate

    deployment = write_deployment(
        tmp_path / f"{adapter_dirs[0].parent.name}.yaml",
        name="learn",
        rubric="kidsartbench",
        base=read_base_ref(tiny_profile.base.resolved_path),
        adapter_dirs=adapter_dirs,
    )
    report = evaluate(
        test_csv,
        test_csv.parent / "images",
        backend="reference",
        profile_name="tiny",
        deployment_path=deployment,
        dimensions=[DIMENSION],
        n_boot=10,
    )
    return report["dimensions"][DIMENSION]["srcc"]


def test_one_dimension_learns_on_the_committed_base(tiny_profile, data, tmp_path):
    from adapters.rubric import load_rubric
    from train.config import load_train_config
    from train.dataset import load_dataset
    from train.init_adapters import make_untrained_adapters
    from train.trainer import train_adapters

    root, train_csv, test_csv = data
    rubric = load_rubric()
    config = load_train_config("tiny").model_copy(update={"epochs": 3, "val_fraction": 0.0})
    dataset = load_dataset(train_csv, root / "train" / "images", rubric, [DIMENSION])
    trained = train_adapters(config, dataset, tiny_profile.base.resolved_path, tmp_path / "trained")
    untrained = make_untrained_adapters(tiny_profile.base.resolved_path, rubric, tmp_path / "untrained", seed=0)
    untrained = [d for d in untrained if d.name == DIMENSION]
    after = _held_out_srcc(tiny_profile, trained, test_csv, tmp_path)
    before = _held_out_srcc(tiny_profile, untrained, test_csv, tmp_path)
    print(f"held-out Spearman of {DIMENSION}: trained {after:.3f}, untrained {before:.3f}")
    assert after >= THRESHOLD, f"trained adapter's held-out Spearman {after:.3f} < {THRESHOLD}"
    assert after - before >= MARGIN, f"trained {after:.3f} does not beat untrained {before:.3f} by {MARGIN}"
