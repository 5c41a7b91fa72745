"""Router pieces without the engine: error mapping, chat message parsing, bounded admission."""

import asyncio

import pytest

from adapters.errors import ImageDecodeError, ImageTooLargeError, UnknownDimensionError
from serve.chat import image_and_text
from serve.errors import (
    EngineUnavailableError,
    MalformedRequestError,
    OverloadedError,
    RequestValidationFailed,
    error_body,
    status_for,
)
from serve.http_parts import Admission, validated
from serve.protocol import ChatCompletionRequest


def _chat_input(messages):
    """The image and text of a chat request's messages, validated by the protocol first (as the route does)."""
    return image_and_text(
        validated(ChatCompletionRequest, {"model": "m", "messages": messages}, "chat request").messages
    )


@pytest.mark.parametrize(
    "error, status",
    [
        (ImageDecodeError("x"), 400),
        (MalformedRequestError("x"), 400),
        (ImageTooLargeError("x"), 413),
        (UnknownDimensionError("x"), 422),
        (RequestValidationFailed("x"), 422),
        (OverloadedError("x"), 429),
        (EngineUnavailableError("x"), 503),
        (RuntimeError("boom"), 500),
    ],
)
def test_status_mapping(error, status):
    assert status_for(error) == status
    body = error_body(error)
    assert body["error"]["code"] == status
    if status == 500:
        assert body["error"]["message"] == "internal error"


def test_image_and_text_from_openai_messages():
    url = "data:image/png;base64,AAAA"
    messages = [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "my dog"}, {"type": "image_url", "image_url": {"url": url}}],
        },
    ]
    assert _chat_input(messages) == (url, "my dog")


@pytest.mark.parametrize(
    "messages, match",
    [
        ([], "messages: List should have at least 1 item"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "needs image_url.url"),
        ([{"role": "user", "content": 5}], "invalid chat request: messages.0.content"),
        ([{"role": "user", "content": "no image"}], "exactly one image_url"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}], "data URLs"),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:a"}},
                        {"type": "image_url", "image_url": {"url": "data:b"}},
                    ],
                }
            ],
            "found 2",
        ),
    ],
)
def test_bad_chat_messages(messages, match):
    with pytest.raises(RequestValidationFailed, match=match):
        _chat_input(messages)


def test_admission_queues_then_refuses_beyond_capacity():
    async def scenario():
        admission = Admission(inflight=1, queued=1, retry_after_s=3)
        release = asyncio.Event()
        entered = []

        async def hold(tag):
            async with admission:
                entered.append(tag)
                await release.wait()

        first = asyncio.create_task(hold("a"))
        second = asyncio.create_task(hold("b"))
        await asyncio.sleep(0.05)
        assert entered == ["a"] and admission.admitted == 2
        with pytest.raises(OverloadedError, match="retry after 3 s"):
            async with admission:
                pass
        release.set()
        await asyncio.gather(first, second)
        assert entered == ["a", "b"] and admission.admitted == 0

    asyncio.run(scenario())


def test_batch_lines_take_one_slot_while_sync_traffic_is_busy_and_every_free_slot_when_quiet():
    async def scenario():
        admission = Admission(inflight=8, queued=0, retry_after_s=2, busy_share=1, quiet_s=0.2)
        release_sync, release_lines = asyncio.Event(), asyncio.Event()
        running = []

        async def sync():
            async with admission:
                await release_sync.wait()

        async def line(tag):
            async with admission.background():
                running.append(tag)
                await release_lines.wait()

        sync_task = asyncio.create_task(sync())
        await asyncio.sleep(0.02)
        lines = [asyncio.create_task(line(i)) for i in range(5)]
        await asyncio.sleep(0.3)
        assert len(running) == 1  # sync in flight: one batch line at a time
        release_sync.set()
        await sync_task
        await asyncio.sleep(0.1)
        assert len(running) == 1  # ended less than quiet_s ago: still busy
        await asyncio.sleep(0.4)
        assert len(running) == 5 and admission.admitted == 5  # quiet: every line that waits gets a slot
        release_lines.set()
        await asyncio.gather(*lines)
        assert admission.admitted == admission.background_admitted == admission.sync_admitted == 0

    asyncio.run(scenario())
