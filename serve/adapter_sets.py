"""Which adapter set the application serves, and changing it without a restart: promote and rollback.

`AdapterSets` is one Ray Serve replica (beside the batch runner, on the routers' node). It
holds the served deployment set and its history in SQLite (WAL) under
`KIDSART_HOME/adapter-sets`. A promotion is two steps, so a set the engines cannot load is
never served: `candidate(path)` loads and validates a deployment set (files, content hashes,
base, LoRA rank) and checks it can replace the served one in place (same base, rubric, prompt
format and served modules: the engines' token-id prompts are built for those at start); the
router has an engine replica load its adapters; `commit(candidate, generation)` then makes it
the served set, unless the set changed meanwhile (409). `rollback` returns to the set served
before the last promotion. Every change has a generation number.

Routers read the served set at start and follow it (`serve.admin_routes.SetFollower`, a long
poll of `next_generation`: told at once of a change, one call per router per half minute when
nothing changes); engine replicas load a new set's adapters when first asked (content-addressed
module names, their hash verified), so requests in flight finish on the adapters they
started with and every answer names the adapter@version it used. The history survives a
restart: started again from the same profile set, the service serves the last promoted set.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from adapters.errors import ConfigError, KidsArtError
from serve.errors import AdapterSetConflictError, InvalidAdapterSetError, error_body
from serve.protocol import ServedSet
from serve.sqlite_state import SqliteState

log = logging.getLogger(__name__)

SETS_DEPLOYMENT = "AdapterSets"

SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    generation INTEGER PRIMARY KEY AUTOINCREMENT,
    lineage TEXT NOT NULL,
    action TEXT NOT NULL,
    served TEXT NOT NULL,
    by TEXT NOT NULL,
    at REAL NOT NULL
);
"""


def served_set(deployment) -> ServedSet:
    """The served form of a validated `adapters.manifest.Deployment`."""
    return ServedSet(
        name=deployment.name,
        source=str(deployment.source),
        base_hash=deployment.base.content_hash,
        rubric=deployment.rubric.name,
        prompt_format=deployment.prompt_format.name,
        adapters=deployment.adapter_labels,
        feedback_adapter=deployment.feedback.manifest.label if deployment.feedback else None,
        modules=deployment.module_names,
        lora_paths={name: str(adapter.path) for name, adapter in deployment.lora_modules.items()},
        calibration=deployment.calibration,
    )


def check_replaceable(served: ServedSet, new: ServedSet) -> None:
    """A set replaces the served one in place only with the same base, rubric, prompt format and modules."""
    for what in ("base_hash", "rubric", "prompt_format"):
        if getattr(new, what) != getattr(served, what):
            raise InvalidAdapterSetError(
                f"deployment set {new.source}: its {what} {getattr(new, what)!r} differs from the served set's "
                f"{getattr(served, what)!r}; a promotion changes adapters only (restart with a new profile for that)"
            )
    if set(new.modules) != set(served.modules):
        raise InvalidAdapterSetError(
            f"deployment set {new.source} serves {sorted(new.modules)}, the served set {sorted(served.modules)}: "
            "a promotion keeps the served dimensions and the feedback adapter"
        )


class SetHistory:
    """The served set and its changes, durable: a stack (promote pushes, rollback pops) replayed from SQLite."""

    def __init__(self, db_path: Path, start: ServedSet):
        self.state = SqliteState(db_path, SCHEMA)
        self.start = start
        # changes belong to the set the service starts from: another profile set starts a new history
        self.lineage = hashlib.sha256(json.dumps(sorted(start.lora_paths.items())).encode()).hexdigest()[:16]

    def _changes(self, connection) -> list[tuple]:
        return connection.execute(
            "SELECT generation, action, served, by, at FROM changes WHERE lineage = ? ORDER BY generation",
            (self.lineage,),
        ).fetchall()

    def _stack(self, changes: list[tuple]) -> list[tuple[int, ServedSet]]:
        stack = [(0, self.start)]
        for generation, action, served, _, _ in changes:
            if action == "promote":
                stack.append((generation, ServedSet.model_validate_json(served)))
            else:  # rollback: back to the set below; recorded with the generation of this change
                stack.pop()
                stack[-1] = (generation, stack[-1][1])
        return stack

    def current(self) -> tuple[int, ServedSet]:
        with self.state.transaction() as connection:
            return self._stack(self._changes(connection))[-1]

    def promote(self, new: ServedSet, expected_generation: int, by: str) -> tuple[int, ServedSet]:
        with self.state.transaction() as connection:
            generation, served = self._stack(self._changes(connection))[-1]
            if generation != expected_generation:
                raise AdapterSetConflictError(
                    f"the served set changed meanwhile (generation {generation}, not {expected_generation}): try again"
                )
            check_replaceable(served, new)
            return self._record(connection, "promote", new, by), new

    def rollback(self, by: str) -> tuple[int, ServedSet]:
        with self.state.transaction() as connection:
            stack = self._stack(self._changes(connection))
            if len(stack) < 2:
                raise AdapterSetConflictError(
                    f"nothing to roll back to: {stack[-1][1].name} is the set the service started with"
                )
            previous = stack[-2][1]
            return self._record(connection, "rollback", previous, by), previous

    def _record(self, connection, action: str, served: ServedSet, by: str) -> int:
        cursor = connection.execute(
            "INSERT INTO changes (lineage, action, served, by, at) VALUES (?, ?, ?, ?, ?)",
            (self.lineage, action, served.model_dump_json(), by, time.time()),
        )
        log.info("adapter set %s by %s: now serving %s (generation %d)", action, by, served.name, cursor.lastrowid)
        return int(cursor.lastrowid)

    def listing(self) -> list[dict]:
        with self.state.transaction() as connection:
            changes = self._changes(connection)
        return [
            {"generation": g, "action": a, "set": json.loads(s)["name"], "source": json.loads(s)["source"], "by": b}
            | {"at": at}
            for g, a, s, b, at in changes
        ]


class SetChecks(BaseModel):
    """How a candidate set is validated: as `kidsart serve` validates the profile's."""

    model_config = ConfigDict(extra="forbid")

    max_lora_rank: int = Field(ge=1, description="The engine's max_lora_rank.")
    base_dir: str | None = Field(default=None, description="The local base folder whose hash the set must name.")
    image_size: int = Field(ge=28, description="The profile's image size (the prompt format must accept it).")


class AdapterSets:
    """The one replica that says which set is served (state in SQLite under `home`/adapter-sets)."""

    def __init__(self, start: dict, checks: dict, home: str):
        from adapters.logs import setup_logging

        setup_logging()
        self.checks = SetChecks.model_validate(checks)
        self.history = SetHistory(Path(home) / "adapter-sets" / "sets.sqlite", ServedSet.model_validate(start))
        generation, served = self.history.current()
        log.info("serving adapter set %s (generation %d)", served.name, generation)
        self._changed = asyncio.Condition()

    async def generation(self) -> int:
        return self.history.current()[0]

    async def next_generation(self, known: int, wait_s: float) -> int:
        """The served generation as soon as it differs from `known`, or after `wait_s` (a long poll: each router
        learns of a change at once, and an idle stack makes one call per router every `wait_s`, not every second)."""
        async with self._changed:
            generation = self.history.current()[0]
            if generation == known:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=wait_s)
                except TimeoutError:
                    return generation
                generation = self.history.current()[0]
        return generation

    async def current(self) -> dict:
        generation, served = self.history.current()
        return {"generation": generation, "set": served.model_dump(mode="json")}

    async def listing(self) -> dict:
        return {**await self.current(), "history": self.history.listing()}

    async def candidate(self, path: str) -> dict:
        """A deployment set loaded and checked against the served one (not served yet), or {"error": ...}."""
        from adapters.manifest import load_deployment

        try:
            try:
                deployment = load_deployment(
                    Path(path),
                    max_lora_rank=self.checks.max_lora_rank,
                    base_dir=Path(self.checks.base_dir) if self.checks.base_dir else None,
                )
                deployment.prompt_format.check_image_size(self.checks.image_size, f"deployment set {path}")
            except ConfigError as exc:  # the operator's file, not our fault: 422 with its reason
                raise InvalidAdapterSetError(str(exc)) from exc
            new = served_set(deployment)
            check_replaceable(self.history.current()[1], new)
            return {"set": new.model_dump(mode="json")}
        except KidsArtError as exc:
            return error_body(exc)

    async def commit(self, candidate: dict, expected_generation: int, by: str) -> dict:
        return await self._change(
            lambda: self.history.promote(ServedSet.model_validate(candidate), expected_generation, by)
        )

    async def rollback(self, by: str) -> dict:
        return await self._change(lambda: self.history.rollback(by))

    async def _change(self, change) -> dict:
        try:
            generation, served = change()
        except KidsArtError as exc:  # returned, not raised: the router rebuilds the typed error (one table)
            return error_body(exc)
        async with self._changed:
            self._changed.notify_all()
        return {"generation": generation, "set": served.model_dump(mode="json")}


def sets_deployment(start: ServedSet, checks: SetChecks, resources: dict[str, float], home: Path):
    """The bound adapter-sets deployment: one replica, no CPU reservation, on the routers' node (their resources)."""
    return (
        serve.deployment(AdapterSets)
        .options(**sets_options(resources))
        .bind(start.model_dump(mode="json"), checks.model_dump(), str(home))
    )


def sets_options(resources: dict[str, float]) -> dict:
    """Its Ray Serve options, in the names a Serve config file uses."""
    actor: dict = {"num_cpus": 0}
    if resources:
        actor["resources"] = dict(resources)
    return {
        "name": SETS_DEPLOYMENT,
        "num_replicas": 1,
        "max_ongoing_requests": 100,
        # the routers' long polls are always in flight: a stop need not wait for them (a change is one
        # SQLite transaction, done or not)
        "graceful_shutdown_timeout_s": 2,
        "ray_actor_options": actor,
    }
