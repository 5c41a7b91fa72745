"""Where does the engine's time go? A torch-profiler table of the vLLM worker for one batch.

    kidsart profile-engine --profile bench --images 8 --out runs/profile

Builds the offline engine exactly as the benchmark does (`loadtest.offline_engine`: the
engine replicas' flags and prompts), warms it up, then profiles one `generate` of images x
nine dimensions (with LoRA, or `--base` without) and writes vLLM's per-operator table (sorted
by self CPU time) to <out>/*.profiler_out.txt, printing its head. Used to find the levers in
docs/performance.md; not a benchmark (the profiler itself slows the run down).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def profile_engine(
    profile_name: str = "bench", images: int = 8, base: bool = False, out: Path = Path("runs/profile")
) -> list[Path]:
    """Profile one batch; the profiler's table files."""
    from adapters.profiles import load_profile
    from loadtest.bench_inputs import ensure_bench_artifacts, write_images
    from loadtest.offline_engine import OfflineEngine
    from serve.engine import engine_env

    ensure_bench_artifacts(profile_name)
    profile = load_profile(profile_name)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for key, value in engine_env(profile).items():
        os.environ.setdefault(key, value)
    measured = write_images(out / "images", images, seed=11, prefix="p")
    warm = write_images(out / "warm", 2, seed=12, prefix="w")
    profiler = {
        "profiler": "torch",
        "torch_profiler_dir": str(out),
        "torch_profiler_with_stack": False,
        "torch_profiler_record_shapes": True,
    }
    engine = OfflineEngine(profile, ["--profiler-config", json.dumps(profiler)])
    engine.generate(engine.load_images(warm[:1]), not base)
    prompts, loras, _ = engine.requests(engine.load_images(measured), not base)
    engine.llm.start_profile()
    started = time.perf_counter()
    engine.llm.generate(prompts, engine.params, lora_request=loras, use_tqdm=False)
    elapsed = time.perf_counter() - started
    engine.llm.stop_profile()
    time.sleep(2)  # the profiler writes its tables after stop
    tables = sorted(out.glob("*.profiler_out.txt"))
    (out / "profiled.json").write_text(json.dumps({"requests": len(prompts), "seconds": elapsed}), encoding="utf-8")
    return tables
