"""`kidsart bench`: the research loop vs the vLLM engine vs the router, same images, same model.

One run measures, on the same N synthetic artworks of several sizes and the same
profile (base + nine adapters):

  (a)  reference    transformers + PEFT, one adapter at a time, one image at a time
                    (serve.reference.ReferenceBackend: the KidsArtBench research loop)
  (b)  engine       vLLM offline (`LLM`), the flags of serve.engine, all 9*N requests
                    in one `generate` call, one LoRA per dimension (the ceiling)
  (b0) engine_base  the same engine and requests without LoRA (base model only)
  (c)  router       the whole stack (vLLM server + Ray Serve router) over HTTP,
                    POST /v1/score per image at the best client concurrency
  (c') engine_http  diagnostic: the router's own fan-out code (serve.scoring.EngineScorer)
                    in-process against the same vLLM server, without Ray Serve

Every phase runs in its own process (spawn-safe, no shared torch/vLLM/Ray state)
and starts from the raw uploaded bytes, so decoding and letter-boxing are timed
everywhere. vLLM's caches are cleared between measured runs, and warm-up uses
other images, so no phase profits from another's work. The image path inside vLLM
is counted with serve.vllm_plugin.mm_stats (decodes, HF preprocessing calls,
vision-encoder images). A benchmark prints figures; it asserts nothing.

    python -m loadtest.bench --profile bench --images 16 --out bench.json
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("kidsart.bench")

IMAGE_SIZES = [(400, 300), (640, 480), (300, 500), (1024, 768), (224, 224), (800, 600)]
PHASES = ("reference", "engine", "router")


# --------------------------------------------------------------------------- inputs


def synthetic_artwork(seed: int, size: tuple[int, int]) -> bytes:
    """A deterministic child-like drawing (shapes and strokes on paper) as PNG or JPEG bytes."""
    import io

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    width, height = size
    paper = tuple(rng.randint(225, 255) for _ in range(3))
    image = Image.new("RGB", size, paper)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(6, 18)):
        color = tuple(rng.randint(0, 255) for _ in range(3))
        x0, y0 = rng.randint(0, width - 1), rng.randint(0, height - 1)
        x1, y1 = min(width - 1, x0 + rng.randint(10, width // 2)), min(height - 1, y0 + rng.randint(10, height // 2))
        kind = rng.choice(["rect", "ellipse", "line", "poly"])
        if kind == "rect":
            draw.rectangle([x0, y0, x1, y1], fill=color)
        elif kind == "ellipse":
            draw.ellipse([x0, y0, x1, y1], outline=color, width=rng.randint(2, 8))
        elif kind == "line":
            draw.line([(x0, y0), (x1, y1), (rng.randint(0, width), rng.randint(0, height))], fill=color, width=rng.randint(2, 10))
        else:
            draw.polygon([(rng.randint(0, width), rng.randint(0, height)) for _ in range(rng.randint(3, 6))], fill=color)
    buffer = io.BytesIO()
    if seed % 2:
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(folder: Path, count: int, seed: int, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        data = synthetic_artwork(seed * 100_003 + i, IMAGE_SIZES[i % len(IMAGE_SIZES)])
        path = folder / f"{prefix}{i:04d}.{'jpg' if (seed * 100_003 + i) % 2 else 'png'}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def ensure_bench_artifacts(profile_name: str) -> None:
    """Build the profile's local base, and its seeded adapters + deployment set, when missing or stale."""
    from adapters.base_builder import ensure_local_base
    from adapters.errors import ConfigError
    from adapters.manifest import load_profile_deployment, read_base_ref, write_deployment
    from adapters.profiles import load_profile
    from adapters.rubric import load_rubric

    profile = load_profile(profile_name)
    ensure_local_base(profile)
    try:
        load_profile_deployment(profile)
        return
    except ConfigError as exc:
        if profile.base.source != "local" or not str(profile.deployment).startswith("artifacts/"):
            raise
        log.info("generating %s's adapters and deployment set (%s)", profile.name, exc)
    from train.init_adapters import make_untrained_adapters

    rubric = load_rubric(profile.rubric)
    out = profile.deployment_path.parent.parent / "adapters" / profile.name
    dirs = make_untrained_adapters(profile.base.resolved_path, rubric, out, rank=min(8, profile.engine.max_lora_rank))
    write_deployment(
        profile.deployment_path, name=profile.name, rubric=rubric.name,
        base=read_base_ref(profile.base.resolved_path), adapter_dirs=dirs,
    )
    load_profile_deployment(profile)


def load_avg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return [float("nan")] * 3


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# --------------------------------------------------------------------------- (a) reference


def phase_reference(profile_name: str, images: list[Path], warm: list[Path], repeats: int) -> dict:
    import torch

    from adapters.profiles import load_profile
    from serve.reference import ReferenceBackend

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    profile = load_profile(profile_name)
    backend = ReferenceBackend(profile)
    device = "cuda" if profile.engine.device == "cuda" and torch.cuda.is_available() else "cpu"
    if device == "cuda":
        backend.model.to(device)

    def score(data: bytes) -> dict:
        if device == "cpu":
            return backend.score_bytes(data)
        return _reference_on_device(backend, data, device)

    # The baseline at its best: on a shared CPU, torch's default of one OpenMP thread
    # per core can lose badly to one thread (threads spin at barriers while a
    # neighbour holds the other core), so time the warm-up images both ways.
    candidates = sorted({1, max(1, os.cpu_count() or 1)}) if device == "cpu" else [torch.get_num_threads()]
    timings = {}
    for threads in candidates:
        torch.set_num_threads(threads)
        score(warm[0].read_bytes())
        t0 = time.perf_counter()
        for path in warm:
            score(path.read_bytes())
        timings[threads] = time.perf_counter() - t0
    torch.set_num_threads(min(timings, key=timings.get))
    best = None
    for _ in range(repeats):
        latencies, scores = [], {}
        started = time.perf_counter()
        for path in images:
            t0 = time.perf_counter()
            result = score(path.read_bytes())
            latencies.append(time.perf_counter() - t0)
            scores[path.name] = {dim: v["score"] for dim, v in result.items()}
        elapsed = time.perf_counter() - started
        run = {"img_s": len(images) / elapsed, "seconds": elapsed, "latencies_s": latencies, "scores": scores}
        if best is None or run["img_s"] > best["img_s"]:
            best = run
    best["torch_threads"] = torch.get_num_threads()
    best["warmup_s_by_threads"] = timings
    best["device"] = device
    return best


def _reference_on_device(backend, data: bytes, device: str) -> dict:
    """The reference loop with inputs moved to the model's device (GPU profiles)."""
    from adapters.hf_scoring import score_token_logits
    from adapters.images import normalize_bytes
    from adapters.rail import expected_score

    torch = backend._torch
    image = normalize_bytes(data, backend.profile.image_size)
    scores = {}
    for dim in backend.rubric.select(None):
        backend.model.set_adapter(dim.name)
        inputs = backend.scoring.batch_inputs(backend.rubric, dim, [image], [None]).to(device)
        with torch.no_grad():
            logits = score_token_logits(backend.model, inputs, backend.scoring.score_token_ids)
        _, mean, _ = expected_score(logits.double().cpu()[0], backend.rubric.levels)
        scores[dim.name] = {"score": float(mean)}
    return scores


# --------------------------------------------------------------------------- (b) engine offline


def engine_llm(profile, deployment):
    """vLLM's offline LLM built from exactly the server command of serve.engine."""
    from vllm import LLM
    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from serve.engine import engine_command

    command = engine_command(profile, deployment)
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(command[3:])
    engine_args = EngineArgs.from_cli_args(args)
    engine_args.disable_log_stats = True
    return LLM.from_engine_args(engine_args)


def _reset_engine_caches(llm) -> None:
    """Forget processed images, encoder outputs and KV prefixes between measured runs."""
    llm.reset_prefix_cache()
    llm.reset_mm_cache()
    try:
        llm.llm_engine.engine_core.reset_encoder_cache()
    except AttributeError:  # older vLLM: the encoder cache is freed with its requests
        pass


def phase_engine(profile_name: str, images: list[Path], warm: list[Path], repeats: int, stats_dir: str | None) -> dict:
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    from adapters.images import normalize_bytes
    from adapters.manifest import load_profile_deployment
    from adapters.profiles import load_profile
    from adapters.prompts import chat_messages
    from adapters.rail import rail_from_token_logprobs
    from serve.vllm_plugin import mm_stats

    profile = load_profile(profile_name)
    deployment = load_profile_deployment(profile)
    rubric = deployment.rubric
    dims = [d for d in rubric.select(None) if d.name in deployment.adapters]
    llm = engine_llm(profile, deployment)
    tokenizer = llm.get_tokenizer()
    score_ids = [tokenizer.encode(t, add_special_tokens=False)[0] for t in rubric.score_tokens]
    id_to_token = dict(zip(score_ids, rubric.score_tokens))
    params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(score_ids), allowed_token_ids=score_ids)
    loras = {d.name: LoRARequest(d.name, i + 1, str(deployment.adapters[d.name].path)) for i, d in enumerate(dims)}
    prompt_text = {
        d.name: tokenizer.apply_chat_template(
            chat_messages(rubric, d, {"type": "image"}), tokenize=False, add_generation_prompt=True
        )
        for d in dims
    }

    def run(paths: list[Path], with_lora: bool) -> tuple[float, dict]:
        started = time.perf_counter()
        prompts, requests, keys = [], [], []
        for path in paths:
            image = normalize_bytes(path.read_bytes(), profile.image_size)  # decode + letter-box once
            for d in dims:
                prompts.append({"prompt": prompt_text[d.name], "multi_modal_data": {"image": image}})
                requests.append(loras[d.name] if with_lora else None)
                keys.append((path.name, d.name))
        outputs = llm.generate(prompts, params, lora_request=requests, use_tqdm=False)
        elapsed = time.perf_counter() - started
        scores: dict = {}
        for (name, dim), output in zip(keys, outputs):
            top = output.outputs[0].logprobs[0]
            token_logprobs = {id_to_token[i]: lp.logprob for i, lp in top.items() if i in id_to_token}
            scores.setdefault(name, {})[dim] = rail_from_token_logprobs(token_logprobs, rubric.score_tokens, rubric.levels).score
        return elapsed, scores

    def counts() -> dict | None:
        return mm_stats.read_counts(Path(stats_dir)) if stats_dir else None

    def clear_counts() -> None:
        if stats_dir:
            for path in Path(stats_dir).glob("*.txt"):
                path.unlink(missing_ok=True)

    run(warm, True)
    run(warm, False)
    result: dict = {}
    for key, with_lora in (("engine_base", False), ("engine", True)):
        best = None
        for _ in range(repeats):
            _reset_engine_caches(llm)
            clear_counts()
            elapsed, scores = run(images, with_lora)
            current = {"img_s": len(images) / elapsed, "seconds": elapsed, "scores": scores, "image_path": counts()}
            if best is None or current["img_s"] > best["img_s"]:
                best = current
        result[key] = best
    result["fast_lora_ops"] = os.environ.get("KIDSART_FAST_LORA_OPS") == "1"
    return result


# --------------------------------------------------------------------------- (c) router over HTTP


async def _http_run(send, images: list[bytes], concurrency: int) -> dict:
    """Score every image with `concurrency` clients; per-image latency and throughput."""
    queue: asyncio.Queue = asyncio.Queue()
    for i, data in enumerate(images):
        queue.put_nowait((i, data))
    latencies: list[float] = [0.0] * len(images)
    results: list = [None] * len(images)
    errors: list[str] = []

    async def worker() -> None:
        while True:
            try:
                i, data = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                results[i] = await send(i, data)
            except Exception as exc:  # recorded, not raised: a benchmark reports failures
                errors.append(f"{exc.__class__.__name__}: {exc}"[:300])
            latencies[i] = time.perf_counter() - t0

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "img_s": len(images) / elapsed,
        "seconds": elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "errors": errors[:5],
        "failed": len(errors),
        "results": results,
    }


def _engine_dev_post(engine_url: str, path: str) -> None:
    import httpx

    try:
        httpx.post(f"{engine_url}{path}", timeout=30)
    except httpx.HTTPError:
        pass


def _reset_server_caches(engine_url: str) -> None:
    for path in ("/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache"):
        _engine_dev_post(engine_url, path)


def phase_router(
    profile_name: str,
    images: list[Path],
    sweep: list[Path],
    warm: list[Path],
    concurrency: list[int],
    router_url: str | None,
    router_port: int,
    engine_port: int,
    stats_dir: str | None,
    engine_http: bool,
) -> dict:
    import httpx

    from adapters.images import encode_png, normalize_bytes, png_data_url
    from adapters.profiles import load_profile
    from serve.vllm_plugin import mm_stats

    profile = load_profile(profile_name)
    env = dict(profile.engine.env)
    env["VLLM_SERVER_DEV_MODE"] = "1"  # cache-reset endpoints, so runs do not profit from each other
    if stats_dir:
        env["KIDSART_MM_STATS"] = stats_dir
    profile = profile.model_copy(update={"engine": profile.engine.model_copy(update={"env": env})})

    def clear_counts() -> None:
        if stats_dir:
            for path in Path(stats_dir).glob("*.txt"):
                path.unlink(missing_ok=True)

    def counts() -> dict | None:
        return mm_stats.read_counts(Path(stats_dir)) if stats_dir else None

    stack = None
    engine_url = None
    if router_url is None:
        from serve.stack import Stack

        stack = Stack(profile, router_port=router_port, engine_port=engine_port, log_dir=Path(tempfile.mkdtemp(prefix="kidsart-bench-logs-")))
        stack.start()
        router_url = stack.url
        engine_url = stack.engine.url
    try:
        raw = {p: p.read_bytes() for p in [*images, *sweep, *warm]}
        out: dict = {"router_url": router_url}

        async def router_runs() -> dict:
            limits = httpx.Limits(max_connections=max(concurrency) * 2, max_keepalive_connections=max(concurrency) * 2)
            async with httpx.AsyncClient(base_url=router_url, timeout=600, limits=limits) as client:

                async def send(i: int, data: bytes) -> dict:
                    body = {"image": base64.b64encode(data).decode("ascii"), "id": str(i)}
                    response = await client.post("/v1/score", json=body)
                    if response.status_code != 200:
                        raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
                    return response.json()["scores"]

                await _http_run(send, [raw[p] for p in warm], len(warm))
                runs = []
                per_level = max(1, len(sweep) // len(concurrency))
                for level, c in enumerate(concurrency):
                    # Sweep on other images, fresh ones per level (and cleared engine caches
                    # when the engine is ours): repeated prompts would hit vLLM's prefix cache.
                    if engine_url:
                        _reset_server_caches(engine_url)
                    subset = sweep[level * per_level:(level + 1) * per_level]
                    run = await _http_run(send, [raw[p] for p in subset], c)
                    run.pop("results")
                    runs.append(run)
                    log.info("router sweep: concurrency %d -> %.2f images/s", c, run["img_s"])
                best_c = max(runs, key=lambda r: r["img_s"])["concurrency"]
                if engine_url:
                    _reset_server_caches(engine_url)
                clear_counts()
                final = await _http_run(send, [raw[p] for p in images], best_c)
                final["image_path"] = counts()
                final["scores"] = {
                    p.name: {dim: v["score"] for dim, v in (r or {}).items()} for p, r in zip(images, final.pop("results"))
                }
                return {"sweep": runs, "final": final}

        out["router"] = asyncio.run(router_runs())

        if engine_http and engine_url:
            from serve.scoring import EngineScorer
            from serve.stack import router_runtime

            runtime = router_runtime(stack.profile, stack.deployment, engine_url)
            best_c = out["router"]["final"]["concurrency"]

            async def engine_runs() -> dict:
                scorer = EngineScorer(runtime)
                try:

                    async def send(i: int, data: bytes) -> dict:
                        def prepare() -> str:
                            return png_data_url(encode_png(normalize_bytes(data, profile.image_size)))

                        data_url = await asyncio.to_thread(prepare)
                        scores, _ = await scorer.score(data_url)
                        return scores

                    _reset_server_caches(engine_url)
                    clear_counts()
                    run = await _http_run(send, [raw[p] for p in images], best_c)
                    run["image_path"] = counts()
                    run["scores"] = {
                        p.name: {dim: v["score"] for dim, v in (r or {}).items()} for p, r in zip(images, run.pop("results"))
                    }
                    return run
                finally:
                    await scorer.aclose()

            out["engine_http"] = asyncio.run(engine_runs())
        return out
    finally:
        if stack is not None:
            stack.stop()


# --------------------------------------------------------------------------- orchestration


def _run_phase(name: str, args: list[str], env: dict[str, str] | None, workdir: Path) -> dict:
    """Run one phase in a fresh interpreter; its result comes back as JSON in a file."""
    result_path = workdir / f"{name}.json"
    command = [sys.executable, "-m", "loadtest.bench", "--phase", name, "--phase-out", str(result_path), *args]
    log.info("phase %s: starting (load %s)", name, load_avg())
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, cwd=str(Path(__file__).resolve().parent.parent))
    if completed.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"bench phase {name!r} failed with exit code {completed.returncode}")
    result = json.loads(result_path.read_text())
    result["wall_s"] = time.perf_counter() - started
    log.info("phase %s: done in %.0f s (load %s)", name, result["wall_s"], load_avg())
    return result


def _max_abs_diff(a: dict, b: dict) -> float | None:
    diffs = [abs(a[i][d] - b[i][d]) for i in a if i in b for d in a[i] if d in b[i]]
    return max(diffs) if diffs else None


def run_bench(
    profile: str = "bench",
    images: int = 16,
    out: Path | None = Path("bench.json"),
    concurrency: list[int] | None = None,
    router_url: str | None = None,
    router_port: int = 8600,
    engine_port: int = 8610,
    repeats: int = 1,
    phases: tuple[str, ...] = PHASES,
    stock_ops: bool = False,
    engine_http: bool = True,
) -> dict:
    from adapters.manifest import load_profile_deployment
    from adapters.profiles import load_profile
    from serve.engine import engine_env

    ensure_bench_artifacts(profile)
    loaded = load_profile(profile)
    concurrency = concurrency or [1, 2, 4, 8, 16]
    workdir = Path(tempfile.mkdtemp(prefix="kidsart-bench-"))
    bench_imgs = write_images(workdir / "images", images, seed=1, prefix="img")
    sweep_imgs = write_images(workdir / "sweep", len(concurrency) * max(8, images // 2), seed=2, prefix="sweep")
    warm_imgs = write_images(workdir / "warm", 2, seed=3, prefix="warm")
    common = ["--profile", profile, "--images-dir", str(workdir / "images"), "--warm-dir", str(workdir / "warm"), "--repeats", str(repeats)]

    conditions = {
        "profile": profile,
        "images": images,
        "dimensions": len(load_profile_deployment(loaded).dimensions),
        "cpu_count": os.cpu_count(),
        "load_before": load_avg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "repeats": repeats,
    }
    results: dict = {}
    if "reference" in phases:
        results["reference"] = _run_phase("reference", common, None, workdir)
    if "engine" in phases:
        stats = workdir / "mm-engine"
        stats.mkdir()
        env = engine_env(loaded)
        env["KIDSART_MM_STATS"] = str(stats)
        results["engine"] = _run_phase("engine", [*common, "--stats-dir", str(stats)], env, workdir)
        if stock_ops:
            stock_env = dict(env)
            stock_env["KIDSART_FAST_LORA_OPS"] = "0"
            stats_stock = workdir / "mm-engine-stock"
            stats_stock.mkdir()
            stock_env["KIDSART_MM_STATS"] = str(stats_stock)
            results["engine_stock"] = _run_phase("engine", [*common, "--stats-dir", str(stats_stock)], stock_env, workdir)
    if "router" in phases:
        stats = workdir / "mm-router"
        stats.mkdir()
        router_args = [
            *common, "--sweep-dir", str(workdir / "sweep"), "--concurrency", ",".join(map(str, concurrency)),
            "--router-port", str(router_port), "--engine-port", str(engine_port), "--stats-dir", str(stats),
        ]
        if router_url:
            router_args += ["--url", router_url]
        if not engine_http:
            router_args += ["--no-engine-http"]
        results["router"] = _run_phase("router", router_args, None, workdir)
    conditions["load_after"] = load_avg()
    summary = summarise(results)
    summary["conditions"] = conditions
    summary["details"] = _details(results)
    if out is not None:
        Path(out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _get(results: dict, *keys):
    node = results
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _ratio(a, b):
    return a / b if a is not None and b else None


def summarise(results: dict) -> dict:
    reference = _get(results, "reference", "img_s")
    engine = _get(results, "engine", "engine", "img_s")
    engine_base = _get(results, "engine", "engine_base", "img_s")
    router_final = _get(results, "router", "router", "final") or {}
    router = router_final.get("img_s")
    summary = {
        "reference_img_s": reference,
        "engine_img_s": engine,
        "engine_base_img_s": engine_base,
        "router_img_s": router,
        "router_vs_reference": _ratio(router, reference),
        "router_vs_engine": _ratio(router, engine),
        "lora_overhead": _ratio(engine_base, engine),
        "p50_ms": router_final.get("p50_ms"),
        "p95_ms": router_final.get("p95_ms"),
    }
    extra = {
        "router_concurrency": router_final.get("concurrency"),
        "router_failed": router_final.get("failed"),
        "engine_http_img_s": _get(results, "router", "engine_http", "img_s"),
        "engine_stock_ops_img_s": _get(results, "engine_stock", "engine", "img_s"),
        "engine_vs_reference": _ratio(engine, reference),
    }
    ref_scores = _get(results, "reference", "scores")
    parity = {}
    for name, scores in (
        ("engine", _get(results, "engine", "engine", "scores")),
        ("engine_stock_ops", _get(results, "engine_stock", "engine", "scores")),
        ("router", router_final.get("scores")),
        ("engine_http", _get(results, "router", "engine_http", "scores")),
    ):
        if ref_scores and scores:
            parity[name] = _max_abs_diff(ref_scores, scores)
    extra["max_abs_score_diff_vs_reference"] = parity
    extra["image_path_counts"] = {
        "engine": _get(results, "engine", "engine", "image_path"),
        "router": router_final.get("image_path"),
        "engine_http": _get(results, "router", "engine_http", "image_path"),
    }
    summary.update({k: v for k, v in extra.items() if v is not None})
    return summary


def _details(results: dict) -> dict:
    details = {}
    if "reference" in results:
        r = results["reference"]
        details["reference"] = {
            "img_s": r["img_s"], "seconds": r["seconds"], "torch_threads": r.get("torch_threads"),
            "warmup_s_by_threads": r.get("warmup_s_by_threads"),
            "p50_ms": 1000 * percentile(r["latencies_s"], 0.5), "p95_ms": 1000 * percentile(r["latencies_s"], 0.95),
        }
    for key in ("engine", "engine_stock"):
        if key in results:
            e = results[key]
            details[key] = {
                "fast_lora_ops": e.get("fast_lora_ops"),
                **{k: {kk: vv for kk, vv in e[k].items() if kk != "scores"} for k in ("engine", "engine_base")},
            }
    if "router" in results:
        r = results["router"]
        details["router_sweep"] = [{k: v for k, v in s.items() if k != "errors"} for s in r["router"]["sweep"]]
        if "engine_http" in r:
            details["engine_http"] = {k: v for k, v in r["engine_http"].items() if k not in ("scores",)}
    return details


def format_summary(summary: dict) -> str:
    def fmt(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    lines = ["kidsart bench (images/s count all nine dimensions of an image)"]
    for key in (
        "reference_img_s", "engine_img_s", "engine_base_img_s", "router_img_s", "router_vs_reference",
        "router_vs_engine", "lora_overhead", "p50_ms", "p95_ms", "router_concurrency", "engine_http_img_s",
        "engine_stock_ops_img_s",
    ):
        if key in summary:
            lines.append(f"  {key:26s} {fmt(summary[key])}")
    if summary.get("max_abs_score_diff_vs_reference"):
        lines.append(f"  max |score - reference|    {summary['max_abs_score_diff_vs_reference']}")
    if summary.get("image_path_counts"):
        lines.append(f"  image path counts          {summary['image_path_counts']}")
    cond = summary.get("conditions", {})
    lines.append(f"  load before/after          {cond.get('load_before')} / {cond.get('load_after')}")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--out", default="bench.json")
    parser.add_argument("--concurrency", default="1,2,4,8,16")
    parser.add_argument("--url", default=None, help="An already running router (skip starting the stack).")
    parser.add_argument("--router-port", type=int, default=8600)
    parser.add_argument("--engine-port", type=int, default=8610)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--phases", default=",".join(PHASES))
    parser.add_argument("--stock-ops", action="store_true", help="Also run the engine with vLLM's own CPU LoRA ops.")
    parser.add_argument("--no-engine-http", action="store_true")
    # internal: one phase in this process
    parser.add_argument("--phase", choices=PHASES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--phase-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--images-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sweep-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--stats-dir", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from adapters.logs import setup_logging

    setup_logging()
    args = _parse_args(argv)
    concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    if args.phase is None:
        summary = run_bench(
            profile=args.profile, images=args.images, out=Path(args.out), concurrency=concurrency,
            router_url=args.url, router_port=args.router_port, engine_port=args.engine_port, repeats=args.repeats,
            phases=tuple(p for p in args.phases.split(",") if p), stock_ops=args.stock_ops,
            engine_http=not args.no_engine_http,
        )
        print(format_summary(summary))
        print(json.dumps({k: summary[k] for k in list(summary)[:9]}))
        return
    images = sorted(Path(args.images_dir).iterdir())
    warm = sorted(Path(args.warm_dir).iterdir())
    if args.phase == "reference":
        result = phase_reference(args.profile, images, warm, args.repeats)
    elif args.phase == "engine":
        result = phase_engine(args.profile, images, warm, args.repeats, args.stats_dir)
    else:
        result = phase_router(
            args.profile, images, sorted(Path(args.sweep_dir).iterdir()), warm, concurrency, args.url,
            args.router_port, args.engine_port, args.stats_dir, not args.no_engine_http,
        )
    Path(args.phase_out).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
