"""`kidsart bench`: the research loop vs the vLLM engine vs the router, same images, same model, same prompts.

One run starts one long-lived worker process per phase (loadtest.bench_worker),
then runs every phase once per round, for `repeats` rounds, in an order that
rotates each round, and reports medians, so a noisy neighbour slows every phase
alike instead of deciding a ratio:

  reference    transformers + PEFT, one adapter and one image at a time (the research loop)
  engine       vLLM offline, all 9*N requests in one `generate`, one LoRA per dimension
  engine_base  the same requests without LoRA
  router       the whole stack over HTTP, POST /v1/score per image at the best concurrency
               (the router calls its engine replica through a Ray handle: no engine port)

All phases read the same image files and build the same prompts (checked: the
engine's prompt-token counter equals the reference's tokenisation), and every
image is decoded, preprocessed and vision-encoded once per run (counted with
serve.vllm_plugin.mm_stats). Beside throughput, bench.json carries the tokens
per image (sent, prefilled, prefix-cache hit rate, from vLLM's own counters), the
machine's float32 matmul rate and the floor's FLOPs per image
(loadtest.ceiling), and what share of that ceiling each path reaches. Parity is
the largest |score - reference| over every run. A benchmark prints figures; it
asserts nothing, but it fails when a request, a cache reset or a phase fails.

    kidsart bench --profile bench --images 16 --repeats 3 --out bench.json
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adapters.locations import HOME_ENV, data_home
from loadtest.bench_inputs import copy_images_dir, ensure_bench_artifacts, write_images
from loadtest.bench_report import summarise
from loadtest.bench_worker import BenchPhaseError

log = logging.getLogger("kidsart.bench")

PHASES = ("reference", "engine", "router")
SETTLE_AFTER_RESUME_S = 2.0


def load_avg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return [float("nan")] * 3


class PhaseProcess:
    """A bench worker process; `ask` sends one command and waits for its answer."""

    def __init__(self, name: str, phase: str, spec: dict, env: dict[str, str] | None, workdir: Path):
        spec_path = workdir / f"{name}-spec.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self.name = name
        log.info("phase %s: starting (load %s)", name, load_avg())
        started = time.perf_counter()
        # the worker resolves the profile's paths as this process does (the same data directory)
        env = {**(env if env is not None else os.environ), HOME_ENV: str(data_home())}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loadtest.bench_worker", "--phase", phase, "--spec", str(spec_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )
        self.info = self._answer("set-up")
        log.info("phase %s: ready in %.0f s", name, time.perf_counter() - started)

    def _answer(self, what: str) -> dict:
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise BenchPhaseError(f"bench phase {self.name!r} exited with code {code} during {what}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise BenchPhaseError(f"bench phase {self.name!r} failed during {what}: {reply.get('error')}")
        return reply["result"]

    def ask(self, command: dict) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._answer(str(command))

    def _tree(self) -> list:
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pause(self) -> None:
        """SIGSTOP the worker and everything under it (engines, Ray): an idle phase takes no CPU from a measured one."""
        import psutil

        for proc in self._tree():
            try:
                proc.suspend()
            except psutil.NoSuchProcess:
                continue

    def resume(self) -> None:
        import psutil

        for proc in reversed(self._tree()):
            try:
                proc.resume()
            except psutil.NoSuchProcess:
                continue

    def cpu_seconds(self) -> float:
        """CPU time used so far by this worker and every process under it (engines, Ray)."""
        import psutil

        total = 0.0
        for proc in self._tree():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total

    def close(self, timeout: float = 120.0) -> None:
        self.resume()
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.flush()
                self.process.wait(timeout=timeout)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                log.warning("phase %s did not stop; killing it", self.name)
                self.process.kill()
                self.process.wait(timeout=30)


def run_bench(
    profile: str = "bench",
    images: int = 16,
    images_dir: Path | None = None,
    out: Path | None = Path("bench.json"),
    concurrency: list[int] | None = None,
    router_url: str | None = None,
    router_port: int = 8600,
    repeats: int = 3,
    phases: tuple[str, ...] = PHASES,
    stock_ops: bool = False,
    deployment: str | None = None,
) -> dict:
    """Run the interleaved benchmark and return (and write to `out`) its summary."""
    from adapters.manifest import load_profile_deployment
    from adapters.profiles import load_profile

    _check_request(phases, repeats)
    if deployment is None:
        ensure_bench_artifacts(profile)
    loaded = load_profile(profile, deployment)
    deployment_path = str(loaded.deployment_path)
    deployment = load_profile_deployment(loaded)
    # the router's own in-flight capacity: the concurrency it serves at under load (a sweep picked from a few
    # images each level chose 2 where 8 gave 0.83 of the engine instead of 0.65; pass a list to sweep)
    concurrency = concurrency or [loaded.router.max_inflight_images]
    workdir = Path(tempfile.mkdtemp(prefix="kidsart-bench-"))
    bench_imgs, sweep_imgs, warm_imgs = _inputs(workdir, images, images_dir, len(concurrency), loaded.limits)
    spec = {
        "profile": profile,
        "deployment": deployment_path,
        "images": [str(p) for p in bench_imgs],
        "warm": [str(p) for p in warm_imgs],
    }

    conditions = _conditions(profile, loaded, deployment, deployment_path, len(bench_imgs), images_dir, repeats)
    config = json.loads((loaded.base.resolved_path / "config.json").read_text(encoding="utf-8"))
    layout = _prompt_layout(loaded, deployment, config)
    workers: dict[str, PhaseProcess] = {}
    jobs: list[tuple[str, str, dict]] = []  # (result key, worker, command)
    try:
        _start_phases(
            phases,
            loaded,
            spec,
            workdir,
            workers,
            jobs,
            stock_ops=stock_ops,
            router_spec=dict(
                spec,
                sweep=[str(p) for p in sweep_imgs],
                concurrency=concurrency,
                router_url=router_url,
                router_port=router_port,
            ),
        )
        runs = _interleave(jobs, workers, repeats)
    finally:
        for worker in workers.values():
            worker.close()
    conditions.update(_conditions_after(runs))
    summary = summarise(
        runs,
        {name: w.info for name, w in workers.items()},
        layout,
        floor=_floor_gflop(loaded, layout, deployment, config),
        block_size=loaded.engine.block_size,
        dtype=loaded.resolved_dtype,
    )
    summary["conditions"] = conditions
    if out is not None:
        Path(out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _check_request(phases: tuple[str, ...], repeats: int) -> None:
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise BenchPhaseError(f"unknown phases {unknown}: choose from {list(PHASES)}")
    if repeats < 1:
        raise BenchPhaseError("repeats must be at least 1")


def _conditions_after(runs: dict[str, list[dict]]) -> dict:
    """The machine's load after the runs and the busiest background share any timed phase saw."""
    return {
        "load_after": load_avg(),
        "background_cpu_share_max": max(
            (r["background_cpu_share"] for key, rs in runs.items() if key != "gemm" for r in rs), default=None
        ),
    }


def _engine_process(name: str, profile, spec: dict, workdir: Path, env: dict[str, str]) -> PhaseProcess:
    stats = workdir / f"mm-{name}"
    stats.mkdir()
    env = dict(env, KIDSART_MM_STATS=str(stats))
    return PhaseProcess(name, "engine", dict(spec, stats_dir=str(stats)), env, workdir)


def _inputs(workdir: Path, images: int, images_dir, sweeps: int, limits) -> tuple[list[Path], list[Path], list[Path]]:
    """The measured images (synthetic, seed 1, or the caller's folder within the limits), the router sweep's
    (seed 2) and the warm-up's (seed 3): no measured run profits from a cache another filled."""
    if images_dir is not None:
        bench_imgs = copy_images_dir(
            Path(images_dir), workdir / "images", limits.max_image_bytes, limits.max_image_pixels
        )
    else:
        bench_imgs = write_images(workdir / "images", images, seed=1, prefix="img")
    sweep_imgs = write_images(workdir / "sweep", sweeps * max(8, len(bench_imgs) // 2), seed=2, prefix="sweep")
    warm_imgs = write_images(workdir / "warm", 2, seed=3, prefix="warm")
    return bench_imgs, sweep_imgs, warm_imgs


def _conditions(profile: str, loaded, deployment, deployment_path: str, images: int, images_dir, repeats: int) -> dict:
    """The bench's conditions: what ran, on which CPU, under which load (bench.json's `conditions`)."""
    from adapters.machine import cpu_model_and_flags

    cpu_model, cpu_flags = cpu_model_and_flags()
    return {
        "profile": profile,
        "deployment": deployment_path,
        "prompt_format": deployment.prompt_format.name,
        "dtype": loaded.dtype,
        "resolved_dtype": loaded.resolved_dtype,
        "images": images,
        "images_source": str(images_dir) if images_dir else "synthetic (seed 1)",
        "dimensions": len(deployment.dimensions),
        "repeats": repeats,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "cpu_avx512_flags": [f for f in cpu_flags if f.startswith("avx512")],
        "cpu_native_bf16": any(f in cpu_flags for f in ("avx512_bf16", "amx_bf16")),
        "engine_block_size": loaded.engine.block_size,
        "engine_reserved_cpus": loaded.engine.reserved_cpus,
        "load_before": load_avg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _start_phases(
    phases, loaded, spec: dict, workdir: Path, workers: dict, jobs: list, *, stock_ops: bool, router_spec: dict
) -> None:
    """Start one worker process per chosen phase (into `workers`) and list its measured jobs (into `jobs`)."""
    from serve.engine import allocator_env, engine_env

    if "reference" in phases:
        env = dict(os.environ, **allocator_env(loaded))  # the same allocator as the engine
        workers["reference"] = PhaseProcess("reference", "reference", spec, env, workdir)
        jobs.append(("reference", "reference", {"op": "run"}))
    if "engine" in phases:
        workers["engine"] = _engine_process("engine", loaded, spec, workdir, {**os.environ, **engine_env(loaded)})
        jobs += [
            ("engine", "engine", {"op": "run", "lora": True}),
            ("engine_base", "engine", {"op": "run", "lora": False}),
        ]
        if stock_ops:
            stock_env = {**os.environ, **engine_env(loaded), "KIDSART_FAST_LORA_OPS": "0"}
            workers["engine_stock"] = _engine_process("engine_stock", loaded, spec, workdir, stock_env)
            jobs.append(("engine_stock", "engine_stock", {"op": "run", "lora": True}))
    if "router" in phases:
        stats = workdir / "mm-router"
        stats.mkdir()
        workers["router"] = PhaseProcess("router", "router", dict(router_spec, stats_dir=str(stats)), None, workdir)
        jobs.append(("router", "router", {"op": "run"}))


def _interleave(jobs: list[tuple[str, str, dict]], workers: dict[str, PhaseProcess], repeats: int) -> dict[str, list]:
    """`repeats` rounds of every job plus a matmul-rate probe, the order rotating by one each round."""
    from loadtest.ceiling import gemm_gflops

    runs: dict[str, list] = {key: [] for key, _, _ in jobs}
    runs["gemm"] = []
    # Idle phases are paused (SIGSTOP) while another one is measured: an idle Ray instance
    # alone took ~8% of this 2-core machine and slowed the research loop by a third.
    for worker in workers.values():
        worker.pause()
    try:
        for round_index in range(repeats):
            shift = round_index % max(1, len(jobs))
            for key, worker_name, command in jobs[shift:] + jobs[:shift]:
                runs[key].append(_measure(workers, worker_name, command, round_index))
                log.info("round %d: %-12s %.2f images/s", round_index + 1, key, runs[key][-1]["img_s"])
            runs["gemm"].append(gemm_gflops(threads=os.cpu_count()))
    finally:
        for worker in workers.values():
            worker.resume()
    return runs


def _measure(workers: dict[str, PhaseProcess], worker_name: str, command: dict, round_index: int) -> dict:
    """One measured run of one phase with the others paused; records the CPU they still used (should be ~0)."""
    worker = workers[worker_name]
    others = {name: w for name, w in workers.items() if name != worker_name}
    worker.resume()
    try:
        if command.get("op") == "run":
            worker.ask({"op": "ready"})  # after a pause: wait until the phase answers again
            # Let timers that fell due during the pause (Ray's control loops, health checks)
            # run now rather than inside the measured run: that work comes from pausing, not serving.
            time.sleep(SETTLE_AFTER_RESUME_S)
        idle_before = {name: w.cpu_seconds() for name, w in others.items()}
        started = time.perf_counter()
        result = worker.ask(command)
        wall = time.perf_counter() - started
        background = {name: w.cpu_seconds() - idle_before[name] for name, w in others.items()}
    finally:
        worker.pause()
    result["background_cpu_s"] = background
    result["background_cpu_share"] = sum(background.values()) / (wall * (os.cpu_count() or 1))
    result["round"] = round_index
    return result


def _prompt_layout(profile, deployment, config: dict | None = None):
    from loadtest.token_accounting import prompt_layout

    if config is None:
        config = json.loads((profile.base.resolved_path / "config.json").read_text(encoding="utf-8"))
    dims = [d for d in deployment.rubric.select(None) if d.name in deployment.adapters]
    return prompt_layout(
        profile.base.resolved_path,
        deployment.rubric,
        dims,
        profile.image_size,
        config["image_token_id"],
        deployment.prompt_format,
    )


def _floor_gflop(profile, layout, deployment, config: dict) -> dict:
    from loadtest.ceiling import floor_gflop_per_image

    first = deployment.adapters[deployment.dimensions[0]].path
    rank = json.loads((Path(first) / "adapter_config.json").read_text(encoding="utf-8"))["r"]
    return {
        "lora": floor_gflop_per_image(config, profile.image_size, layout.requests(), lora_rank=rank),
        "base": floor_gflop_per_image(config, profile.image_size, layout.requests()),
    }
