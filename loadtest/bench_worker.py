"""One phase of `kidsart bench` in its own process, kept alive so that measured runs of all phases interleave.

The coordinator (loadtest.bench) starts one worker per phase, then asks each in
turn for one measured run, round after round, so a noisy neighbour slows every
phase alike instead of deciding a ratio. Protocol: one JSON command per line on
the worker's stdin; one JSON answer per line on a private copy of its original
stdout (everything else the worker or its children print goes to stderr).
The first answer reports that the phase is set up (or why it failed).

Phases:
  reference  transformers + PEFT, one adapter at a time, one image at a time
             (serve.reference.ReferenceBackend: the KidsArtBench research loop)
  engine     vLLM offline (`LLM`), the flags of serve.engine, all 9*N requests in one
             `generate` call, with one LoRA per dimension or without LoRA (the ceiling)
  router     the whole stack over HTTP (loadtest.bench_router)

Before every measured engine or router run the engine's caches are cleared and then
primed with one warm-up image (another image): the fixed prefixes are cached, as in
steady state after the first image of a scoring window, while no measured image is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("kidsart.bench")


class BenchPhaseError(RuntimeError):
    """A phase could not be set up or a measured run failed."""


# --------------------------------------------------------------------------- reference


class ReferenceWorker:
    def __init__(self, spec: dict):
        import torch

        from adapters.profiles import load_profile
        from serve.reference import ReferenceBackend

        self.images = [Path(p) for p in spec["images"]]
        warm = [Path(p) for p in spec["warm"]]
        profile = load_profile(spec["profile"], spec.get("deployment"))
        self.backend = ReferenceBackend(profile)
        self.torch = torch
        # The baseline at its best: on a shared CPU, torch's default of one OpenMP thread
        # per core can lose badly to one thread (threads spin at barriers while a
        # neighbour holds the other core), so time the warm-up images both ways.
        timings = {}
        candidates = (
            sorted({1, max(1, os.cpu_count() or 1)}) if self.backend.device == "cpu" else [torch.get_num_threads()]
        )
        for threads in candidates:
            torch.set_num_threads(threads)
            self.backend.score_bytes(warm[0].read_bytes())
            started = time.perf_counter()
            for path in warm:
                self.backend.score_bytes(path.read_bytes())
            timings[threads] = time.perf_counter() - started
        torch.set_num_threads(min(timings, key=timings.get))
        self.info = {
            "torch_threads": torch.get_num_threads(),
            "warmup_s_by_threads": timings,
            "dtype": profile.resolved_dtype,
            "device": self.backend.device,
        }

    def ready(self) -> dict:
        return {"ready": True}

    def handle(self, command: dict) -> dict:
        latencies, scores = [], {}
        started = time.perf_counter()
        for path in self.images:
            t0 = time.perf_counter()
            result = self.backend.score_bytes(path.read_bytes())
            latencies.append(time.perf_counter() - t0)
            scores[path.name] = {dim: v["score"] for dim, v in result.items()}
        elapsed = time.perf_counter() - started
        return {"img_s": len(self.images) / elapsed, "seconds": elapsed, "latencies_s": latencies, "scores": scores}

    def close(self) -> None:
        return


# --------------------------------------------------------------------------- engine offline


class EngineWorker:
    def __init__(self, spec: dict):
        from adapters.profiles import load_profile
        from loadtest.offline_engine import OfflineEngine

        self.images = [Path(p) for p in spec["images"]]
        self.warm = [Path(p) for p in spec["warm"]]
        self.stats_dir = Path(spec["stats_dir"]) if spec.get("stats_dir") else None
        self.profile = load_profile(spec["profile"], spec.get("deployment"))
        self.engine = OfflineEngine(self.profile)
        self.llm = self.engine.llm
        self._generate(self.warm, True)
        self._generate(self.warm, False)
        self.info = {
            "fast_lora_ops": os.environ.get("KIDSART_FAST_LORA_OPS") == "1",
            "dtype": self.profile.resolved_dtype,
        }

    def _generate(self, paths: list[Path], with_lora: bool) -> tuple[float, dict, list[int]]:
        from adapters.rail import rail_from_token_logprobs

        started = time.perf_counter()
        keys, outputs = self.engine.generate(self.engine.load_images(paths), with_lora)
        elapsed = time.perf_counter() - started
        rubric, id_to_token = self.engine.rubric, self.engine.id_to_token
        scores: dict = {}
        for (name, dim), output in zip(keys, outputs, strict=True):
            top = output.outputs[0].logprobs[0]
            token_logprobs = {id_to_token[i]: lp.logprob for i, lp in top.items() if i in id_to_token}
            scores.setdefault(name, {})[dim] = rail_from_token_logprobs(
                token_logprobs, rubric.score_tokens, rubric.levels
            ).score
        return elapsed, scores, [output.num_cached_tokens or 0 for output in outputs]

    def ready(self) -> dict:
        return {"ready": True}

    def handle(self, command: dict) -> dict:
        from loadtest.token_accounting import counter_delta, counters_from_offline
        from serve.vllm_plugin import mm_stats

        with_lora = bool(command.get("lora", True))
        self._reset_caches()
        self._generate(self.warm[:1], with_lora)  # steady state: fixed prefixes cached, no measured image
        clear_counts(self.stats_dir)
        before = counters_from_offline(self.llm.get_metrics())
        elapsed, scores, cached = self._generate(self.images, with_lora)
        delta = counter_delta(before, counters_from_offline(self.llm.get_metrics()))
        return {
            "img_s": len(self.images) / elapsed,
            "seconds": elapsed,
            "scores": scores,
            "image_path": mm_stats.read_counts(self.stats_dir) if self.stats_dir else None,
            "counters": delta,
            # Cross-check of the counters: the cached tokens each RequestOutput reports.
            "cached_tokens_from_outputs": sum(cached),
        }

    def _reset_caches(self) -> None:
        """Forget KV prefixes, processed images and encoder outputs; a reset that fails fails the run."""
        if not self.engine.reset_caches():
            raise BenchPhaseError("vLLM refused to reset its prefix cache (requests still running?)")

    def close(self) -> None:
        return


def clear_counts(stats_dir: Path | None) -> None:
    """Start the image-path counters (serve.vllm_plugin.mm_stats) from zero."""
    if stats_dir:
        for path in stats_dir.glob("*.txt"):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- process plumbing


def _workers() -> dict:
    from loadtest.bench_router import RouterWorker

    return {"reference": ReferenceWorker, "engine": EngineWorker, "router": RouterWorker}


def main(argv: list[str] | None = None) -> int:
    from adapters.logs import setup_logging

    # Answers go to a private copy of stdout; fd 1 then points at stderr, so nothing
    # printed by this process or the engine processes it starts can corrupt them.
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    setup_logging()
    parser = argparse.ArgumentParser(description="One kidsart bench phase (internal).")
    parser.add_argument("--phase", required=True, choices=["reference", "engine", "router"])
    parser.add_argument("--spec", required=True, help="JSON file with the phase's inputs.")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))

    def answer(payload: dict) -> None:
        channel.write(json.dumps(payload) + "\n")

    try:
        worker = _workers()[args.phase](spec)
    except Exception as exc:  # reported to the coordinator, which stops the benchmark
        log.exception("bench phase %s failed to start", args.phase)
        answer({"ok": False, "error": f"{exc.__class__.__name__}: {exc}"[:2000]})
        return 1
    answer({"ok": True, "result": worker.info})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("op") == "quit":
                break
            if command.get("op") == "ready":
                answer({"ok": True, "result": worker.ready()})
                continue
            try:
                answer({"ok": True, "result": worker.handle(command)})
            except Exception as exc:  # reported to the coordinator, which stops the benchmark
                log.exception("bench phase %s: %s failed", args.phase, command)
                answer({"ok": False, "error": f"{exc.__class__.__name__}: {exc}"[:2000]})
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
