"""bench.json from the runs of `kidsart bench`: medians, ratios, tokens, the compute ceiling, parity.

The first nine keys are the benchmark's headline and keep their names and order:
reference_img_s, engine_img_s, engine_base_img_s, router_img_s,
router_vs_reference, router_vs_engine, lora_overhead, p50_ms, p95_ms. Each
images/s figure is the median over the interleaved runs of that phase
(`conditions.repeats`), and ratios are ratios of medians (`runs_img_s` and
`ratios_by_round` show the spread).
"""

from __future__ import annotations

import statistics

from loadtest.token_accounting import PromptLayout, token_figures

HEADLINE = (
    "reference_img_s",
    "engine_img_s",
    "engine_base_img_s",
    "router_img_s",
    "router_vs_reference",
    "router_vs_engine",
    "lora_overhead",
    "p50_ms",
    "p95_ms",
)
COUNTED_PHASES = ("engine", "engine_base", "engine_stock", "router")


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def _median_run(runs: list[dict]) -> dict:
    """The run whose throughput is the median (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r["img_s"])
    return ordered[(len(ordered) - 1) // 2] if ordered else {}


def _max_abs_diff(a: dict, b: dict) -> float | None:
    diffs = [abs(a[i][d] - b[i][d]) for i in a if i in b for d in a[i] if d in b[i]]
    return max(diffs) if diffs else None


def _token_accounting(runs: dict, layout: PromptLayout, block_size: int | None) -> dict:
    out = {}
    for phase in COUNTED_PHASES:
        per_run = []
        for run in runs.get(phase, []):
            if run.get("counters") is None:
                continue
            images = len(run["scores"])
            per_run.append(token_figures(run["counters"], layout, images, block_size))
        if not per_run:
            continue
        merged = {}
        for key in per_run[0]:
            values = [r[key] for r in per_run]
            if all(isinstance(v, bool) for v in values):
                merged[key] = all(values)
            elif all(isinstance(v, (int, float)) for v in values):
                merged[key] = _median(values)
            else:
                merged[key] = values[0]
        out[phase] = merged
    if "reference" in runs:
        # No cache: every dimension's full prompt is prefilled for every image.
        out["reference"] = {
            "prompt_tokens_per_image": layout.prompt_tokens_per_image,
            "prefilled_tokens_per_image": layout.prompt_tokens_per_image,
            "prefix_cache_hit_rate": 0.0,
        }
    return out


def parity_tolerance(dtype: str) -> float:
    """Largest |score - reference| accepted: float32 paths agree to ~1e-6; bf16 rounds differently in each."""
    return 1e-3 if dtype == "float32" else 2e-2


def summarise(
    runs: dict, infos: dict, layout: PromptLayout, floor: dict, block_size: int | None, dtype: str = "float32"
) -> dict:
    """The bench.json summary from each phase's runs (see the module docstring for the headline keys)."""
    img = {key: _median([r["img_s"] for r in value]) for key, value in runs.items() if key != "gemm"}
    reference, engine, engine_base, router = (img.get(k) for k in ("reference", "engine", "engine_base", "router"))
    router_run = _median_run(runs.get("router", []))
    summary = {
        "reference_img_s": reference,
        "engine_img_s": engine,
        "engine_base_img_s": engine_base,
        "router_img_s": router,
        "router_vs_reference": _ratio(router, reference),
        "router_vs_engine": _ratio(router, engine),
        "lora_overhead": _ratio(engine_base, engine),
        "p50_ms": router_run.get("p50_ms"),
        "p95_ms": router_run.get("p95_ms"),
    }
    tokens = _token_accounting(runs, layout, block_size)
    main_tokens = tokens.get("engine") or tokens.get("router") or {}
    gemm = _median(runs.get("gemm", []))
    useful = floor["lora"]
    extra = {
        "router_concurrency": (infos.get("router") or {}).get("concurrency"),
        "engine_stock_ops_img_s": img.get("engine_stock"),
        "engine_vs_reference": _ratio(engine, reference),
        "prompt_tokens_per_image": main_tokens.get("prompt_tokens_per_image"),
        "prefilled_tokens_per_image": main_tokens.get("prefilled_tokens_per_image"),
        "prefix_cache_hit_rate": main_tokens.get("prefix_cache_hit_rate"),
        "image_tokens_per_request": layout.image_tokens,
        "prefilled_tokens_target_per_image": len(layout.prompt) * (layout.image_tokens + 40),
        "gemm_gflops": gemm,
        "useful_gflop_per_image": useful,
        "engine_ceiling_fraction": _ratio(engine * useful if engine else None, gemm),
        "router_ceiling_fraction": _ratio(router * useful if router else None, gemm),
        "engine_base_ceiling_fraction": _ratio(engine_base * floor["base"] if engine_base else None, gemm),
        "reference_ceiling_fraction": _ratio(reference * useful if reference else None, gemm),
    }
    summary.update({k: v for k, v in extra.items() if v is not None})
    summary["token_accounting"] = tokens
    summary["prompt_layout"] = layout.as_dict()

    parity = _parity(runs)
    summary["max_abs_score_diff_vs_reference"] = parity
    summary["parity_tolerance"] = parity_tolerance(dtype)
    summary["parity_ok"] = all(v <= summary["parity_tolerance"] for v in parity.values()) if parity else None
    summary["image_path_counts"] = {
        phase: _worst_counts([r.get("image_path") for r in runs.get(phase, [])])
        for phase in COUNTED_PHASES
        if phase in runs
    }
    summary["runs_img_s"] = {key: [r["img_s"] for r in value] for key, value in runs.items() if key != "gemm"}
    summary["runs_gemm_gflops"] = runs.get("gemm", [])
    summary["ratios_by_round"] = _ratios_by_round(runs)
    summary["details"] = {
        "phases": infos,
        "runs": {
            key: [{k: v for k, v in r.items() if k not in ("scores", "latencies_s")} for r in value]
            for key, value in runs.items()
            if key != "gemm"
        },
        "floor_gflop_per_image": floor,
    }
    return summary


def _parity(runs: dict) -> dict:
    """Per phase, the largest |score - the first reference run's score| over its runs."""
    reference_runs = runs.get("reference", [])
    parity = {}
    if reference_runs:
        truth = reference_runs[0]["scores"]
        for phase, phase_runs in runs.items():
            if phase in ("gemm", "engine_base") or not phase_runs:  # the base model has other scores
                continue
            diffs = [_max_abs_diff(truth, r["scores"]) for r in phase_runs]
            diffs = [d for d in diffs if d is not None]
            if diffs:
                parity["reference_runs" if phase == "reference" else phase] = max(diffs)
    return parity


def _worst_counts(counts: list[dict | None]) -> dict | None:
    """Per kind, the largest image-path count over the runs (each should equal the number of images)."""
    counts = [c for c in counts if c]
    if not counts:
        return None
    return {kind: max(c.get(kind, 0) for c in counts) for kind in counts[0]}


def _ratios_by_round(runs: dict) -> dict:
    by_round: dict[int, dict] = {}
    for key, value in runs.items():
        if key == "gemm":
            continue
        for run in value:
            by_round.setdefault(run.get("round", 0), {})[key] = run["img_s"]
    out = {"router_vs_reference": [], "router_vs_engine": [], "lora_overhead": []}
    for _, row in sorted(by_round.items()):
        out["router_vs_reference"].append(_ratio(row.get("router"), row.get("reference")))
        out["router_vs_engine"].append(_ratio(row.get("router"), row.get("engine")))
        out["lora_overhead"].append(_ratio(row.get("engine_base"), row.get("engine")))
    return {k: v for k, v in out.items() if any(x is not None for x in v)}


def format_summary(summary: dict) -> str:
    def fmt(value) -> str:
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value)

    cond = summary.get("conditions", {})
    lines = [
        f"kidsart bench (images/s count all nine dimensions of an image; medians of {cond.get('repeats')} interleaved "
        "runs)"
    ]
    for key in (
        *HEADLINE,
        "router_concurrency",
        "engine_stock_ops_img_s",
        "prompt_tokens_per_image",
        "prefilled_tokens_per_image",
        "prefilled_tokens_target_per_image",
        "prefix_cache_hit_rate",
        "gemm_gflops",
        "useful_gflop_per_image",
        "engine_ceiling_fraction",
        "router_ceiling_fraction",
        "reference_ceiling_fraction",
    ):
        if summary.get(key) is not None:
            lines.append(f"  {key:34s} {fmt(summary[key])}")
    if summary.get("runs_img_s"):
        runs = {k: [round(x, 2) for x in v] for k, v in summary["runs_img_s"].items()}
        lines.append(f"  runs (images/s)                    {runs}")
    if summary.get("max_abs_score_diff_vs_reference"):
        lines.append(
            f"  max |score - reference|            {summary['max_abs_score_diff_vs_reference']}"
            f" (tolerance {summary['parity_tolerance']}: {'ok' if summary['parity_ok'] else 'EXCEEDED'})"
        )
    if summary.get("image_path_counts"):
        lines.append(f"  image path counts                  {summary['image_path_counts']}")
    lines.append(f"  cpu                                {cond.get('cpu_model')} {cond.get('cpu_avx512_flags')}")
    lines.append(f"  load before/after                  {cond.get('load_before')} / {cond.get('load_after')}")
    lines.append(f"  idle phases' CPU share (max)       {fmt(cond.get('background_cpu_share_max'))}")
    return "\n".join(lines)
