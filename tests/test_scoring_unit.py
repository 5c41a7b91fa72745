"""EngineScorer against a fake engine deployment handle: calls, RAIL, retries of dead replicas, engine failures,
the engine watch."""

import asyncio
import math
import time

import numpy as np
import pytest
from ray import exceptions as ray_exceptions

import serve.scoring
from adapters.errors import ScoreDistributionError, UnknownDimensionError
from adapters.limits import InputLimits
from adapters.profiles import RouterSettings
from adapters.prompts import load_prompt_format
from adapters.rail import rail_from_token_logprobs
from serve.errors import EngineResponseError, EngineUnavailableError
from serve.scoring import ENGINE_ATTEMPTS, EngineScorer, EngineWatch, RouterRuntime

DIMS = ["realism", "line_texture"]
TOKENS = ["1", "2", "3", "4", "5"]
PROBS = {"realism": [0.1, 0.2, 0.4, 0.2, 0.1], "line_texture": [0, 0, 0, 0.5, 0.5]}
PIXELS = np.zeros((224, 224, 3), dtype=np.uint8)


def _runtime(**overrides):
    values = dict(
        rubric="kidsartbench",
        adapters={d: f"{d}@t" for d in DIMS},
        limits=InputLimits(image_size=224, max_image_bytes=1024, max_image_pixels=1000),
        settings=RouterSettings(max_inflight_images=2, max_queued_images=2, retry_after_s=1, engine_timeout_s=5),
        prompt_format=load_prompt_format("kidsart"),
    )
    values.update(overrides)
    return RouterRuntime(**values)


class _Response:
    """Like Ray Serve's DeploymentResponse: awaitable once, and `cancel()` cancels the call."""

    def __init__(self, coroutine):
        self.coroutine, self.cancelled = coroutine, False

    def __await__(self):
        return self.coroutine.__await__()

    def cancel(self):
        self.cancelled = True
        self.coroutine.close()


class _Method:
    """A deployment handle's method: `.remote(*args)` gives a response; `answer(call number, *args)` is async."""

    def __init__(self, answer):
        self.answer, self.calls, self.responses = answer, [], []

    def remote(self, *args):
        self.calls.append(args)
        self.responses.append(_Response(self.answer(len(self.calls), *args)))
        return self.responses[-1]


class FakeEngine:
    def __init__(self, score=None, feedback=None):
        self.score = _Method(score or _logprobs_answer)
        self.feedback = _Method(feedback or _never)


async def _never(n, *args):
    raise AssertionError("not expected to be called")


async def _logprobs_answer(n, pixels, dimensions, description, loras=None):
    return {
        dim: {
            "logprobs": {t: math.log(p) for t, p in zip(TOKENS, PROBS[dim], strict=True) if p > 0},
            "prompt_tokens": 100,
            "cached_tokens": 64,
        }
        for dim in dimensions
    }


def _scorer(engine, watch=None, **runtime):
    return EngineScorer(_runtime(**runtime), engine, watch)


@pytest.fixture
def no_pause(monkeypatch):
    monkeypatch.setattr(serve.scoring, "RETRY_PAUSE_S", 0)


def test_one_call_per_image_carries_pixels_dimensions_and_description_and_scores_follow_rail():
    engine = FakeEngine()
    scores, tokens = asyncio.run(_scorer(engine).score(PIXELS, None, "a cat"))
    # no dimension named: every deployed one, in rubric order, in one call
    ((pixels, dimensions, description, loras),) = engine.score.calls
    assert pixels is PIXELS and dimensions == DIMS and description == "a cat"
    assert loras is None  # a runtime without modules: the engine's own start set
    assert sorted(scores) == sorted(DIMS) and tokens == 200
    for dim in DIMS:
        expected = rail_from_token_logprobs(
            {t: math.log(p) for t, p in zip(TOKENS, PROBS[dim], strict=True) if p > 0}, TOKENS
        )
        assert scores[dim]["score"] == pytest.approx(expected.score)
        assert scores[dim]["probs"] == pytest.approx(expected.probs) and scores[dim]["std"] == pytest.approx(
            expected.std
        )
        assert scores[dim]["adapter"] == f"{dim}@t"
    assert scores["realism"]["score"] == pytest.approx(3.0) and scores["line_texture"]["score"] == pytest.approx(4.5)
    assert scores["line_texture"]["probs"] == pytest.approx([0, 0, 0, 0.5, 0.5])
    engine = FakeEngine()
    scores, tokens = asyncio.run(_scorer(engine).score(PIXELS, ["line_texture"]))
    assert (
        engine.score.calls[0][1:] == (["line_texture"], None, None)
        and list(scores) == ["line_texture"]
        and tokens == 100
    )


@pytest.mark.parametrize("dimension", ["imagination", "nonsense"])  # in the rubric but not deployed; not in it at all
def test_an_unknown_dimension_is_refused_before_any_engine_call(dimension):
    engine = FakeEngine()
    with pytest.raises(UnknownDimensionError):
        asyncio.run(_scorer(engine).score(PIXELS, ["realism", dimension]))
    assert engine.score.calls == []
    with pytest.raises(UnknownDimensionError, match="no adapter is deployed"):
        _scorer(engine).select(["imagination"])


class EngineDeadError(Exception):
    """Named like vLLM's: the router recognises it by name (it never imports vLLM)."""


class _WrappedTaskError(Exception):
    """Like Ray's RayTaskError: the replica's own exception as `cause`."""

    def __init__(self, cause):
        super().__init__(f"task failed: {type(cause).__name__}")
        self.cause = cause


@pytest.mark.parametrize(
    "death",
    [
        ray_exceptions.ActorDiedError,
        ray_exceptions.RayActorError,
        lambda: _WrappedTaskError(EngineDeadError("engine core died")),
    ],
)
def test_a_call_whose_replica_died_is_sent_again(no_pause, death):
    async def dies_once(n, *args):
        if n == 1:
            raise death()
        return await _logprobs_answer(n, *args)

    engine = FakeEngine(score=dies_once)
    scores, _ = asyncio.run(_scorer(engine).score(PIXELS, ["realism"]))
    assert len(engine.score.calls) == 2 and scores["realism"]["score"] == pytest.approx(3.0)
    assert engine.score.calls[0] == engine.score.calls[1]  # the same image and dimensions, sent again


def test_a_call_that_keeps_dying_is_503_kind_after_the_attempts(no_pause):
    async def always_dies(n, *args):
        raise ray_exceptions.ActorDiedError()

    engine = FakeEngine(score=always_dies)
    with pytest.raises(EngineUnavailableError, match=f"replica was lost.*{ENGINE_ATTEMPTS} attempts"):
        asyncio.run(_scorer(engine).score(PIXELS, ["realism"]))
    assert len(engine.score.calls) == ENGINE_ATTEMPTS > 1


@pytest.mark.parametrize("error", [ValueError("bad image"), _WrappedTaskError(KeyError("realism"))])
def test_an_error_that_is_no_death_is_502_kind_at_once(no_pause, error):
    async def fails(n, *args):
        raise error

    engine = FakeEngine(score=fails)
    with pytest.raises(EngineResponseError, match=f"failed on the score request: {type(error).__name__}"):
        asyncio.run(_scorer(engine).score(PIXELS, ["realism"]))
    assert len(engine.score.calls) == 1


@pytest.mark.parametrize(
    "answer",
    [
        {},  # the dimension missing
        {"realism": {"prompt_tokens": 10}},  # no logprobs
        {"realism": None},
        None,
    ],
)
def test_an_answer_without_score_token_logprobs_is_502_kind(answer):
    async def answers(n, *args):
        return answer

    with pytest.raises(EngineResponseError, match="answer for realism has no score-token logprobs"):
        asyncio.run(_scorer(FakeEngine(score=answers)).score(PIXELS, ["realism"]))


def test_logprobs_without_any_score_token_give_no_default_score():
    async def answers(n, *args):
        return {"realism": {"logprobs": {"cat": -0.1}, "prompt_tokens": 10}}

    with pytest.raises(ScoreDistributionError, match="none of the score tokens"):
        asyncio.run(_scorer(FakeEngine(score=answers)).score(PIXELS, ["realism"]))


def test_slow_engine_is_503_kind_after_the_timeout_and_the_call_is_cancelled():
    seen = []

    async def slow(n, *args):
        try:
            await asyncio.sleep(2.0)  # past the scorer's timeout
        except (asyncio.CancelledError, GeneratorExit):
            seen.append("cancelled")
            raise
        return await _logprobs_answer(n, *args)

    settings = RouterSettings(engine_timeout_s=0.1)
    engine = FakeEngine(score=slow)

    async def main():
        with pytest.raises(EngineUnavailableError, match="did not answer within 0.1 s"):
            await _scorer(engine, settings=settings).score(PIXELS, ["realism"])
        await asyncio.sleep(0)  # let a cancellation reach the call

    asyncio.run(main())
    assert len(engine.score.calls) == 1  # a timeout is not retried
    assert seen == ["cancelled"]  # the engine call does not run on for nobody


def test_with_no_running_replica_requests_are_503_kind_without_calling_the_engine():
    watch = EngineWatch(max_outage_s=60)
    engine = FakeEngine()
    scorer = _scorer(engine, watch)
    assert asyncio.run(scorer.ready()) == (False, "engine status not read yet")
    asyncio.run(scorer.score(PIXELS, ["realism"]))  # not read yet: calls are not refused on that alone
    assert len(engine.score.calls) == 1

    watch.update(0, "replica EngineServer#1 failed its health check")
    with pytest.raises(EngineUnavailableError, match="no engine replica is healthy.*failed its health check"):
        asyncio.run(scorer.score(PIXELS, ["realism"]))
    assert len(engine.score.calls) == 1
    ready, reason = asyncio.run(scorer.ready())
    assert not ready and "no engine replica is healthy" in reason and "max_outage_s" not in reason

    watch.down_since = time.monotonic() - 120  # the outage has outlasted max_outage_s
    assert watch.outage_s() >= 120
    ready, reason = asyncio.run(scorer.ready())
    assert not ready and "past engine.max_outage_s=60 s, kidsart serve is stopping" in reason
    with pytest.raises(EngineUnavailableError, match="max_outage_s"):
        asyncio.run(scorer.score(PIXELS, ["realism"]))
    assert len(engine.score.calls) == 1

    watch.update(1, "")
    assert watch.down_since is None and watch.outage_s() == 0.0
    assert asyncio.run(scorer.ready()) == (True, "ready")
    asyncio.run(scorer.score(PIXELS, ["realism"]))
    assert len(engine.score.calls) == 2


def test_a_call_waiting_when_the_last_replica_goes_is_503_kind_and_cancelled(monkeypatch):
    """Ray Serve would hold a call until a replacement replica has started (a minute or more): once its status
    shows no running replica, the waiting call is cancelled and answered 503 at once."""
    monkeypatch.setattr(serve.scoring, "WATCH_PERIOD_S", 0.05)
    watch = EngineWatch(max_outage_s=60)
    watch.update(1, "")

    async def held(n, *args):
        await asyncio.sleep(30)  # queued in Ray Serve for a replica that is not there

    engine = FakeEngine(score=held)

    async def main():
        async def replica_lost():
            await asyncio.sleep(0.2)
            watch.update(0, "replica died")

        lost = asyncio.create_task(replica_lost())
        started = time.monotonic()
        with pytest.raises(EngineUnavailableError, match="no engine replica is healthy.*replica died"):
            await _scorer(engine, watch).score(PIXELS, ["realism"])
        await lost
        return time.monotonic() - started

    waited = asyncio.run(main())
    assert waited < 2.0  # not the engine timeout (5 s) nor the 30 s the call would have waited
    assert len(engine.score.calls) == 1 and engine.score.responses[0].cancelled


def test_an_outage_is_timed_from_its_start():
    watch = EngineWatch(max_outage_s=60)
    watch.update(0, "")
    first = watch.down_since
    watch.update(0, "still down")  # a later reading does not restart the clock
    assert watch.down_since == first and watch.reason().startswith("no engine replica is healthy (for 0 s): still down")


def test_feedback_call_carries_the_scores_and_its_text_is_trimmed():
    from adapters.feedback import FeedbackSettings

    async def comment(n, pixels, scores, description, max_tokens, lora):
        return "  Realism is a real strength here. "

    engine = FakeEngine(feedback=comment)
    scores = {"realism": {"score": 4.26, "probs": [0, 0, 0, 0.74, 0.26]}, "line_texture": {"score": 1.5}}
    scorer = _scorer(engine, feedback_adapter="feedback@sft-1", feedback=FeedbackSettings(max_tokens=40, timeout_s=5))
    result = asyncio.run(scorer.feedback(PIXELS, scores, "a cat"))
    assert result == {"text": "Realism is a real strength here.", "adapter": "feedback@sft-1"}
    ((pixels, sent_scores, description, _, lora),) = engine.feedback.calls
    assert lora is None  # no modules named: the engine's own feedback module
    assert pixels is PIXELS and sent_scores == {"realism": 4.26, "line_texture": 1.5} and description == "a cat"

    async def no_text(n, *args):
        return {"text": "not a string"}

    with pytest.raises(EngineResponseError, match="no text"):
        asyncio.run(_scorer(FakeEngine(feedback=no_text), feedback_adapter="feedback@sft-1").feedback(PIXELS, scores))


def test_feedback_without_a_feedback_adapter_is_a_422_naming_it():
    from adapters.errors import FeedbackNotDeployedError
    from serve.errors import status_for

    engine = FakeEngine()
    scorer = _scorer(engine, deployment_name="creativity-tiny")
    with pytest.raises(
        FeedbackNotDeployedError, match="'creativity-tiny' has no feedback adapter.*feedback@<hash> LoRA"
    ) as info:
        scorer.check_feedback()
    assert status_for(info.value) == 422
    with pytest.raises(FeedbackNotDeployedError):
        asyncio.run(scorer.feedback(PIXELS, {"realism": {"score": 3.0}}))
    assert engine.feedback.calls == []
