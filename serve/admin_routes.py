"""The router's side of the served adapter set: following it, and the admin routes that change it.

- `SetFollower` reads the served set from `serve.adapter_sets.AdapterSets` when the router
  replica starts and then follows its generation by a long poll (`next_generation`, answered
  at once on a change, else after `FOLLOW_WAIT_S`); a new one is applied to the router
  (`apply`: a new scorer for the new set; requests in flight keep the old one).
- `AdminRoutes` does the work of `GET /v1/admin/adapters` (served set and history),
  `POST /v1/admin/adapters/promote` (`{"deployment": PATH}`: validated by AdapterSets, its
  adapters loaded into an engine replica, then committed and applied here at once) and
  `POST /v1/admin/adapters/rollback`. The router checks the admin key first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from adapters.errors import KidsArtError
from serve.adapter_sets import ServedSet
from serve.errors import AdapterSetConflictError, EngineResponseError, InvalidAdapterSetError, MalformedRequestError
from serve.http_parts import json_answer, parse_json, validated
from serve.protocol import AdapterSetStatus, PromoteRequest

log = logging.getLogger(__name__)

FOLLOW_WAIT_S = 30.0  # a long poll's longest wait (it returns at once when the generation changes)
FOLLOW_RETRY_S = 1.0  # after a failed poll (AdapterSets restarting)
_REMOTE_ERRORS = {cls.kind: cls for cls in (AdapterSetConflictError, InvalidAdapterSetError)}


def _unwrap(answer: dict) -> dict:
    """AdapterSets' answer, or its typed error raised again here (so the one status table maps it)."""
    if "error" in answer:
        detail = answer["error"]
        raise _REMOTE_ERRORS.get(detail.get("type"), KidsArtError)(detail.get("message", "adapter sets failed"))
    return answer


class SetFollower:
    """Keeps one router replica on the served set."""

    def __init__(self, sets, apply: Callable[[ServedSet, int], None]):
        self.sets = sets
        self.apply = apply
        self.generation: int | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Read the served set now (a restarted router serves what was promoted), then follow it."""
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def refresh(self) -> None:
        self.take(await self.sets.current.remote())

    def take(self, answer: dict) -> None:
        if answer["generation"] != self.generation:
            self.generation = answer["generation"]
            self.apply(ServedSet.model_validate(answer["set"]), self.generation)

    async def _loop(self) -> None:
        while True:
            try:
                if await self.sets.next_generation.remote(self.generation, FOLLOW_WAIT_S) != self.generation:
                    await self.refresh()
            except Exception as exc:  # AdapterSets restarting: keep serving the set we have, say so
                log.warning("could not read the served adapter set: %s", exc)
                await asyncio.sleep(FOLLOW_RETRY_S)


class AdminRoutes:
    """The admin routes' work (the router authorises the admin key before calling these)."""

    def __init__(self, sets, engine, follower: SetFollower):
        self.sets, self.engine, self.follower = sets, engine, follower

    async def status(self):
        return json_answer(AdapterSetStatus.model_validate(await self.sets.listing.remote()))

    async def promote(self, body: bytes, by: str):
        if not body:
            raise MalformedRequestError('send JSON {"deployment": "<path of a deployment-set YAML>"}')
        request = validated(PromoteRequest, parse_json(body), "promote request")
        expected = await self.sets.generation.remote()
        candidate = ServedSet.model_validate(_unwrap(await self.sets.candidate.remote(request.deployment))["set"])
        await self._load(candidate)
        return await self._applied(await self.sets.commit.remote(candidate.model_dump(mode="json"), expected, by))

    async def rollback(self, by: str):
        previous = await self.sets.listing.remote()
        answer = _unwrap(await self.sets.rollback.remote(by))
        try:
            await self._load(ServedSet.model_validate(answer["set"]))
        except EngineResponseError:  # served before, so its files were good: log, the engines load it when asked
            log.warning("an engine replica could not preload the rolled-back set; it loads on first use")
        log.info("rolled back from %s", previous["set"]["name"])
        return await self._applied(answer)

    async def _load(self, served: ServedSet) -> None:
        """One engine replica loads the set's adapters (hashes checked) before it is served: a set an engine
        refuses is never served. Other replicas load them on their first request for them."""
        try:
            await self.engine.load_adapters.remote(served.lora_paths)
        except Exception as exc:  # Ray wraps the replica's error
            raise EngineResponseError(f"an engine replica could not load {served.name}: {str(exc)[-500:]}") from exc

    async def _applied(self, answer: dict):
        self.follower.take(_unwrap(answer))  # this router at once; the others by their long polls
        return await self.status()
