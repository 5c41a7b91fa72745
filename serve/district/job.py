"""One district job end to end: discover, plan, score (asyncio or Ray Data), export, report, summary (and, for an
OpenAI batch input, the Batch API's output and error files: serve.district.openai_batch)."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.datafiles import atomic_write
from adapters.errors import ConfigError
from adapters.limits import DEFAULT_LIMITS, InputLimits
from adapters.rubric import DEFAULT_RUBRIC
from serve.district.client import RetryPolicy
from serve.district.journal import Journal, JournalError

log = logging.getLogger(__name__)

RUN_META = "run.json"

EXIT_OK = 0
EXIT_ROW_ERRORS = 1
EXIT_INCOMPLETE = 3


class DistrictJobConfig(BaseModel):
    """Everything a district run needs once the scoring service is known."""

    model_config = ConfigDict(extra="forbid")

    input: Path = Field(description="A folder tree, a CSV manifest or an OpenAI batch input file (JSONL).")
    input_format: Literal["auto", "folder", "csv", "openai-batch"] = Field(
        default="auto",
        description="How `input` is read; auto: a folder, a .csv manifest, or a .jsonl OpenAI batch input file.",
    )
    openai_batch_output: Path | None = Field(
        default=None,
        description="With an OpenAI batch input: write the Batch API's output file here (one line per answered line, "
        "in input order, with the sync route's body) and its error file beside it as `<stem>.errors.jsonl`.",
    )
    out: Path = Field(description="Output folder: journal, scores.csv/.parquet, report.html.")
    resume: bool = Field(default=False, description="Continue the run whose journal is in `out`.")
    concurrency: int = Field(default=32, ge=1, description="Images in flight at once (asyncio path).")
    dimensions: list[str] = Field(default_factory=list, description="Dimensions to score; empty = all of the rubric.")
    rubric: str = Field(default=DEFAULT_RUBRIC, description="Rubric name or path (for the column set).")
    levels: list[str] = Field(
        default_factory=lambda: ["school", "grade", "class"], description="Names of the folder levels below the root."
    )
    pipeline: Literal["async", "ray"] = Field(default="async", description="Local asyncio client or Ray Data pipeline.")
    ray_address: str | None = Field(
        default=None, description="Ray cluster address for the Ray pipeline (None = local)."
    )
    ray_actors: int = Field(
        default=1, ge=1, description="Scoring actors in the Ray pipeline (each runs 4 batches at once)."
    )
    ray_batch_size: int = Field(default=8, ge=1, description="Images per Ray Data batch.")
    max_outage_s: float = Field(
        default=RetryPolicy.model_fields["max_outage_s"].default,
        ge=0,
        le=86_400,
        description="Give up (resumable) after this long without an answer.",
    )
    max_thumbnails: int = Field(default=400, description="Thumbnails embedded in the report.")
    report: bool = Field(default=True, description="Write report.html.")
    feedback: bool = Field(
        default=False,
        description="Ask for a teacher's comment per artwork (CSV column `feedback`, shown in the report).",
    )
    progress: bool = Field(default=True, description="Show a progress bar.")


@dataclass
class JobResult:
    exit_code: int
    summary: dict
    files: list[Path] = field(default_factory=list)


def _check_meta(out: Path, config: DistrictJobConfig, source: str, dims: list[str]) -> None:
    meta_path = out / RUN_META
    meta = {
        "input": source,
        "dimensions": dims,
        "rubric": config.rubric,
        "feedback": config.feedback,
        "levels": list(config.levels),  # how the review app finds the inputs again
        "input_format": config.input_format,
    }
    if meta_path.exists():
        previous = json.loads(meta_path.read_text(encoding="utf-8"))
        if previous.get("input") != source or previous.get("dimensions") != dims:
            raise JournalError(
                f"{out} holds a run of {previous.get('input')} on {previous.get('dimensions')}; "
                f"this is {source} on {dims}: use another --out"
            )
        if bool(previous.get("feedback", False)) != config.feedback:
            was = "with" if previous.get("feedback") else "without"
            raise JournalError(f"{out} holds a run made {was} --feedback; resume it the same way, or use another --out")
        return
    text = json.dumps({**meta, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, ensure_ascii=False, indent=1)
    atomic_write(meta_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def check_config(config: DistrictJobConfig) -> None:
    """Refuse options that do not fit the input, before anything is started."""
    from serve.district.inputs import input_kind

    kind = input_kind(config.input, config.input_format)
    if config.openai_batch_output is not None and kind != "openai-batch":
        raise ConfigError(
            f"--openai-batch-output needs an OpenAI batch input (a .jsonl file, or --input-format openai-batch); "
            f"{config.input} is read as a {kind}"
        )


def run_job(
    config: DistrictJobConfig, *, url: str | None, limits: InputLimits = DEFAULT_LIMITS, runtime: dict | None = None
) -> JobResult:
    """Run (or resume) a district job against a router at `url`, or through the engine deployment's handles when
    `runtime` (what the application serves) is given; files above `limits.max_image_bytes` are rows with an error
    at once, never sent."""
    from adapters.rubric import load_rubric
    from serve.district.export import build_table
    from serve.district.inputs import discover
    from serve.district.runner import plan_work

    check_config(config)
    rubric = load_rubric(config.rubric)
    dims = [d.name for d in rubric.select(config.dimensions or None)]
    discovery = discover(
        config.input,
        levels=tuple(config.levels),
        max_bytes=limits.max_image_bytes,
        input_format=config.input_format,
    )
    if discovery.endpoint is not None:
        from serve.district.openai_batch import check_lines

        check_lines(discovery.items, rubric, dims, config.feedback)
    out = Path(config.out)
    started = time.monotonic()
    with Journal(out) as journal:
        if journal.records and not config.resume:
            raise JournalError(
                f"{out} already holds a run ({len(journal.records)} results in {journal.path.name}); "
                "pass --resume to continue it, or choose another --out"
            )
        _check_meta(out, config, discovery.source, dims)
        plan = plan_work(discovery.items, journal)
        if config.resume:
            log.info("resuming: %d of %d inputs already done", plan.already_done, len(discovery.items))
        stats = _score(config, plan, journal, url, runtime, total=len(discovery.items))
        records = dict(journal.records)
    frame = build_table(
        discovery.items, records, dims, levels=len(rubric.levels), rubric=rubric, feedback=config.feedback
    )
    files = _write_outputs(config, frame, dims, rubric, discovery)
    if config.openai_batch_output is not None:
        from serve.district.openai_batch import write_batch_files

        output = Path(config.openai_batch_output)
        files += write_batch_files(output, discovery.source, discovery.items, records, discovery.refused, rubric)
    summary = _summary(config, frame, discovery, plan, stats, elapsed=time.monotonic() - started)
    code = EXIT_INCOMPLETE if summary["pending"] else EXIT_ROW_ERRORS if summary["errors"] else EXIT_OK
    return JobResult(exit_code=code, summary=summary, files=files)


def _score(config: DistrictJobConfig, plan, journal: Journal, url: str | None, runtime: dict | None, total: int):
    """Score the plan's units with the configured pipeline, journaling every result; its RunStats."""
    from serve.district.runner import score_units

    policy = RetryPolicy(max_outage_s=config.max_outage_s)
    progress = None
    if config.progress:
        from tqdm import tqdm

        progress = tqdm(
            total=total, initial=plan.already_done, unit="img", desc="scoring", dynamic_ncols=True, smoothing=0.1
        )
    try:
        if config.pipeline == "ray":
            from serve.district.ray_pipeline import score_with_ray

            return score_with_ray(
                plan,
                journal,
                urls=[url] if url else [],
                runtime=runtime,
                dimensions=config.dimensions or None,
                policy=policy,
                actors=config.ray_actors,
                batch_size=config.ray_batch_size,
                ray_address=config.ray_address,
                progress=progress,
                feedback=config.feedback,
            )
        return score_units(
            plan,
            journal,
            url,
            concurrency=config.concurrency,
            dimensions=config.dimensions or None,
            policy=policy,
            progress=progress,
            feedback=config.feedback,
        )
    finally:
        if progress is not None:
            progress.close()


def _write_outputs(config: DistrictJobConfig, frame, dims: list[str], rubric, discovery) -> list[Path]:
    """scores.csv and scores.parquet, and report.html unless --no-report."""
    from serve.district.export import write_tables

    files = list(write_tables(frame, Path(config.out)))
    if config.report:
        from functools import partial

        from serve.district.inputs import read_input_bytes
        from serve.district.report import write_report

        # a batch line's thumbnail is made from its image, read again from the batch file
        paths = {item.key: partial(read_input_bytes, item) if item.batch else item.path for item in discovery.items}
        meta = {"input": discovery.source, "rubric": rubric.title}
        files.append(
            write_report(
                frame,
                dims,
                Path(config.out) / "report.html",
                paths=paths,
                skipped=discovery.skipped,
                meta=meta,
                max_thumbnails=config.max_thumbnails,
                rubric=rubric,
                title=f"District scores: {Path(discovery.source).name}",
            )
        )
    return files


def _summary(config: DistrictJobConfig, frame, discovery, plan, stats, elapsed: float) -> dict:
    """The run's figures (summary.json and the CLI's closing lines)."""
    status = Counter(frame["status"])
    error_types = Counter(frame.loc[frame["status"] == "error", "error_type"])
    return {
        "inputs": len(frame),
        "ok": status.get("ok", 0),
        "errors": status.get("error", 0),
        "pending": status.get("pending", 0),
        "error_types": dict(error_types),
        "already_done_before_this_run": plan.already_done,
        "requests_this_run": stats.requests,
        "reused_duplicates_this_run": stats.reused,
        "duplicate_inputs": int((frame["duplicate_of"] != "").sum()),
        "skipped_files": len(discovery.skipped),
        "retries": stats.retries,
        "scoring_s": round(stats.elapsed_s, 2),
        "images_per_s": round(stats.requests / stats.elapsed_s, 3) if stats.elapsed_s > 0 and stats.requests else 0.0,
        "pipeline_startup_s": round(stats.first_result_s, 2) if stats.first_result_s is not None else None,
        "elapsed_s": round(elapsed, 2),
        "pipeline": config.pipeline,
    }
