"""`kidsart demo`: the main job end to end on the embedded tiny model.

1. makes a small set of sample drawings procedurally (train.synth; no downloads),
2. starts the real stack (vLLM engine with the nine adapters + Ray Serve router),
3. scores every sample through the router's HTTP API, prints a table and writes
   JSON lines (runs/demo/scores.jsonl),
4. batch-scores a bundled synthetic district (4 schools, 3 grades, some broken and
   duplicate files) with the district job and writes its report
   (runs/demo/district/report.html),
5. stops the stack.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

SAMPLE_SEEDS = list(range(9001, 9009))
SAMPLE_SIZES = [(400, 300), (300, 400), (640, 480), (256, 256), (500, 280), (320, 480), (800, 600), (360, 360)]


def make_samples(out_dir: Path) -> list[Path]:
    """Write the bundled sample drawings (deterministic) as PNG/JPEG files."""
    from train.synth import render_artwork

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (seed, (width, height)) in enumerate(zip(SAMPLE_SEEDS, SAMPLE_SIZES, strict=True)):
        image, _labels = render_artwork(seed, width=width, height=height)
        suffix = "jpg" if index % 2 else "png"
        path = out_dir / f"sample-{seed}.{suffix}"
        if not path.exists():
            image.save(path, quality=92) if suffix == "jpg" else image.save(path)
        paths.append(path)
    return paths


def print_table(rows: list[dict], dimensions: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="RAIL expected scores (1-5), one LoRA adapter per dimension",
        caption="Tiny demo model on synthetic drawings: these numbers verify the pipeline; they are not art "
        "judgements.",
    )
    table.add_column("image", no_wrap=True)
    short = {d: "".join(part[:4] for part in d.split("_")) for d in dimensions}
    for dim in dimensions:
        table.add_column(short[dim], justify="right")
    for row in rows:
        if "error" in row:
            table.add_row(Path(row["image"]).name, f"[red]{row['error']}[/red]", *[""] * (len(dimensions) - 1))
            continue
        table.add_row(Path(row["image"]).name, *[f"{row['scores'][d]['score']:.2f}" for d in dimensions])
    console = Console()
    Console(width=max(console.width, 150)).print(table)


def run_demo(profile_name: str, out_dir: Path, port: int | None = None) -> int:
    from adapters.base_builder import ensure_local_base
    from adapters.profiles import load_profile
    from serve.client import ScoringClient
    from serve.stack import Stack

    profile = load_profile(profile_name)
    ensure_local_base(profile)
    samples = make_samples(out_dir / "samples")
    failures = 0
    with Stack(profile, router_port=port, log_dir=out_dir / "logs") as stack:
        dimensions = stack.deployment.dimensions
        with ScoringClient(stack.url) as client, ThreadPoolExecutor(max_workers=8) as pool:

            def one(path: Path) -> dict:
                try:
                    return {
                        "image": str(path),
                        **client.score_file(path, request_id=path.name).model_dump(exclude_none=True),
                    }
                except Exception as exc:  # reported per image; the demo goes on
                    return {"image": str(path), "error": str(exc)}

            rows = list(pool.map(one, samples))
        failures = sum("error" in row for row in rows)
        jsonl = out_dir / "scores.jsonl"
        jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        print_table(rows, dimensions)
        log.info("wrote %s (%d images, %d failed)", jsonl, len(rows), failures)
        district_status = _district_demo(stack.url, out_dir)
    return 1 if failures or district_status else 0


DEMO_DISTRICT = dict(seed=0, schools=4, grades=3, classes=2, images=120, broken=6, duplicates=4)


def _district_demo(url: str, out_dir: Path) -> int:
    """Score a bundled synthetic district (some files deliberately broken) with the batch job; write the report."""
    from serve.district.job import EXIT_INCOMPLETE, DistrictJobConfig, run_job
    from train.district import make_district

    district = out_dir / "district-input"
    if not (district / "district.json").exists():
        make_district(district, **DEMO_DISTRICT)
    result = run_job(
        DistrictJobConfig(input=district, out=out_dir / "district", resume=True, concurrency=16),
        url=url,
    )
    summary = result.summary
    log.info("district report: %s", (out_dir / "district" / "report.html").resolve())
    log.info("district summary: %s", {k: summary[k] for k in list(summary)[:8]})
    # error rows for the deliberately broken files are expected; an incomplete run is not
    return 1 if result.exit_code >= EXIT_INCOMPLETE else 0
