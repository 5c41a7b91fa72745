"""The served adapter set's history (promote pushes, rollback pops, durable, compare-and-set), what may replace
the served set in place, the router's runtime switched to another set, and the promotion gate's paired bootstrap."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from adapters.locations import PACKAGE_DIR
from adapters.manifest import load_deployment
from serve.adapter_sets import AdapterSets, SetHistory, check_replaceable, served_set
from serve.errors import AdapterSetConflictError, InvalidAdapterSetError
from serve.scoring import EngineScorer
from tests.test_scoring_unit import PIXELS, FakeEngine, _runtime
from train.promote import paired_gate

DEPLOYMENTS = PACKAGE_DIR / "deployments"


def untrained_set(folder: Path) -> Path:
    """The committed untrained adapters with the trained feedback adapter: the served set's modules, other weights."""
    spec = yaml.safe_load((DEPLOYMENTS / "tiny-init.yaml").read_text(encoding="utf-8"))
    spec["adapters"] = [str((DEPLOYMENTS / a).resolve()) for a in spec["adapters"]]
    spec["feedback_adapter"] = str((DEPLOYMENTS / "../trained/tiny/feedback").resolve())
    path = folder / "untrained.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """The committed trained set and an untrained one of the same base and modules."""
    untrained = untrained_set(tmp_path_factory.mktemp("sets"))
    return served_set(load_deployment(DEPLOYMENTS / "tiny.yaml")), served_set(load_deployment(untrained))


def test_promote_pushes_rollback_pops_and_a_restart_keeps_the_served_set(sets, tmp_path):
    trained, untrained = sets
    history = SetHistory(tmp_path / "sets.sqlite", trained)
    assert history.current() == (0, trained)
    with pytest.raises(AdapterSetConflictError, match="nothing to roll back to"):
        history.rollback("ana")
    generation, served = history.promote(untrained, 0, "ana")
    assert generation == 1 and served == untrained
    with pytest.raises(AdapterSetConflictError, match="changed meanwhile"):
        history.promote(untrained, 0, "ben")  # ben saw generation 0: refused, nothing recorded
    again = SetHistory(tmp_path / "sets.sqlite", trained)  # the service started again from the same profile set
    assert again.current() == (1, untrained)
    generation, served = again.rollback("ben")
    assert generation == 2 and served == trained
    assert [(c["action"], c["set"], c["by"]) for c in again.listing()] == [
        ("promote", untrained.name, "ana"),
        ("rollback", trained.name, "ben"),
    ]
    other_start = SetHistory(tmp_path / "sets.sqlite", untrained)  # another profile set: a history of its own
    assert other_start.current() == (0, untrained) and other_start.listing() == []


def test_only_a_set_of_the_same_base_rubric_format_and_modules_replaces_the_served_one(sets):
    trained, untrained = sets
    check_replaceable(trained, untrained)
    for change in ({"base_hash": "sha256:other"}, {"rubric": "creativity5"}, {"prompt_format": "kidsartbench-release"}):
        with pytest.raises(InvalidAdapterSetError, match=next(iter(change))):
            check_replaceable(trained, untrained.model_copy(update=change))
    fewer = {k: v for k, v in untrained.modules.items() if k != "feedback"}
    with pytest.raises(InvalidAdapterSetError, match="keeps the served dimensions"):
        check_replaceable(trained, untrained.model_copy(update={"modules": fewer}))


def test_a_candidate_that_does_not_load_is_refused_with_its_reason(sets, tmp_path):
    trained, _ = sets
    actor = AdapterSets(trained.model_dump(mode="json"), {"max_lora_rank": 8, "image_size": 224}, str(tmp_path))
    answer = asyncio.run(actor.candidate(str(tmp_path / "missing.yaml")))
    assert answer["error"]["type"] == "invalid_adapter_set" and answer["error"]["code"] == 422
    assert "missing.yaml" in answer["error"]["message"]
    good = asyncio.run(actor.candidate(str(untrained_set(tmp_path))))
    assert good["set"]["name"] == "tiny-init" and asyncio.run(actor.generation()) == 0  # not served yet


def test_a_routers_long_poll_returns_at_once_on_a_change_and_after_its_wait_otherwise(sets, tmp_path):
    trained, _ = sets
    actor = AdapterSets(trained.model_dump(mode="json"), {"max_lora_rank": 8, "image_size": 224}, str(tmp_path))

    async def scenario():
        started = time.monotonic()
        assert await actor.next_generation(0, 0.2) == 0  # nothing changed: answered after its wait
        waited = time.monotonic() - started
        candidate = (await actor.candidate(str(untrained_set(tmp_path))))["set"]
        poll = asyncio.create_task(actor.next_generation(0, 30.0))
        await asyncio.sleep(0.05)
        assert not poll.done()
        started = time.monotonic()
        assert (await actor.commit(candidate, 0, "ana"))["generation"] == 1
        assert await asyncio.wait_for(poll, 5.0) == 1
        told = time.monotonic() - started
        assert await actor.next_generation(0, 30.0) == 1  # already different: no wait
        return waited, told

    waited, told = asyncio.run(scenario())
    assert 0.15 <= waited < 5.0 and told < 1.0


def test_the_scorer_sends_the_served_sets_modules_and_a_switch_leaves_calls_in_flight_alone(sets):
    trained, untrained = sets
    runtime = _runtime().serving(trained)
    engine = FakeEngine()
    old = EngineScorer(runtime, engine)
    new = EngineScorer(runtime.serving(untrained), engine)
    scores, _ = asyncio.run(old.score(PIXELS, ["realism"]))
    assert scores["realism"]["adapter"] == trained.adapters["realism"]
    module = trained.modules["realism"]
    assert engine.score.calls[-1][3] == {"realism": [module, trained.lora_paths[module]]}
    scores, _ = asyncio.run(new.score(PIXELS, ["realism"]))
    assert scores["realism"]["adapter"] == untrained.adapters["realism"]
    assert engine.score.calls[-1][3]["realism"][0] == untrained.modules["realism"] != module
    assert old.runtime.adapters == trained.adapters  # the old scorer (a call in flight) still has its set


def test_the_gate_refuses_only_a_set_lower_beyond_its_paired_interval():
    rng = np.random.default_rng(3)
    labels = {d: rng.integers(1, 6, 120).tolist() for d in ("a", "b")}
    good = {d: (np.asarray(v) + rng.normal(0, 0.6, 120)).tolist() for d, v in labels.items()}
    noise = {d: rng.normal(3, 1, 120).tolist() for d in labels}
    same = {d: (np.asarray(v) + 1e-6).tolist() for d, v in good.items()}
    old_mean, new_mean, low, high, n = paired_gate(good, noise, labels, n_boot=300, seed=0)
    assert old_mean > 0.8 and abs(new_mean) < 0.3 and high < 0 and n == 300  # worse: refused
    old_mean, new_mean, low, high, _ = paired_gate(good, same, labels, n_boot=300, seed=0)
    assert low <= 0 <= high  # no different: accepted
    _, _, low, _, _ = paired_gate(noise, good, labels, n_boot=300, seed=0)
    assert low > 0  # better: accepted, and the interval says so
