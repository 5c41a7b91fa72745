"""The district job's handle client against a fake engine deployment: the same results as the HTTP path's client,
outages retried under the one retry policy, refused inputs and engine failures as error rows."""

import asyncio
import io

import pytest
from PIL import Image

from serve.client import RetryPolicy, RouterUnavailableError
from serve.district.handles import HandleScoreClient
from serve.errors import EngineResponseError
from serve.scoring import EngineWatch
from tests.test_scoring_unit import DIMS, FakeEngine, _runtime


class StillWatch(EngineWatch):
    """Ray Serve's status as the test sets it (no polling)."""

    def start(self) -> None:
        pass

    async def refresh(self) -> None:
        pass


def _png(size=(300, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def _client(engine, watch, **kwargs):
    runtime = _runtime(
        limits=_runtime().limits.model_copy(update={"max_image_bytes": 10_000_000, "max_image_pixels": 10_000_000})
    )
    return HandleScoreClient(
        runtime.model_dump(),
        engine=engine,
        watch=watch,
        policy=RetryPolicy(base_delay_s=0.01, max_delay_s=0.02, max_outage_s=kwargs.pop("outage", 5)),
        **kwargs,
    )


def test_an_image_is_prepared_scored_on_every_deployed_dimension_and_journaled_like_the_http_path():
    watch = StillWatch(60)
    watch.update(1, "")
    engine = FakeEngine()
    result = asyncio.run(_client(engine, watch).score(_png(), request_id="school/a.png", description="a cat"))
    assert result["status"] == "ok" and sorted(result["scores"]) == sorted(DIMS)
    assert abs(result["scores"]["realism"]["score"] - 3.0) < 1e-9  # symmetric distribution around 3
    ((pixels, dims, description, loras),) = engine.score.calls
    assert pixels.shape == (224, 224, 3) and dims == DIMS and description == "a cat"  # as the router passes it
    assert loras is None or set(loras) == set(DIMS)  # each dimension's [module, folder] when the runtime names them


def test_an_outage_is_waited_out_under_the_retry_policy_then_scored():
    watch = StillWatch(60)
    watch.update(0, "replica EngineServer#1 failed its health check")
    engine = FakeEngine()
    client = _client(engine, watch)

    async def main():
        async def back():
            await asyncio.sleep(0.1)
            watch.update(1, "")

        asyncio.get_running_loop().create_task(back())
        return await client.score(_png(), request_id="a.png")

    assert asyncio.run(main())["status"] == "ok"
    assert client.retries >= 1 and len(engine.score.calls) == 1  # refused at once while down, not sent


def test_an_outage_past_max_outage_stops_the_run_resumably():
    watch = StillWatch(60)
    watch.update(0, "no node has a free kidsart_engine")
    client = _client(FakeEngine(), watch, outage=0.2)
    with pytest.raises(RouterUnavailableError, match="rerun with --resume"):
        asyncio.run(client.score(_png(), request_id="a.png"))
    with pytest.raises(RouterUnavailableError, match="no engine replica"):
        asyncio.run(client.wait_ready())


def test_a_refused_input_and_an_engine_failure_are_that_rows_errors():
    watch = StillWatch(60)
    watch.update(1, "")
    refused = asyncio.run(_client(FakeEngine(), watch).score(b"not an image", request_id="bad.png"))
    assert refused["status"] == "error" and 400 <= refused["http_status"] < 500, refused

    async def broken(n, *args):
        raise EngineResponseError("the engine's answer has no logprobs")

    failed = asyncio.run(_client(FakeEngine(score=broken), watch).score(_png(), request_id="a.png"))
    assert failed["status"] == "error" and failed["http_status"] >= 500, failed
