"""`kidsart loop-study` (`make loop-study`): the learning loop on known truth, run as a user would run it.

Every step is the documented command, run as a subprocess (the printed commands are the ones
docs/learning-loop.md lists); the simulated teacher drives the review app's JSON API over HTTP:

1. `kidsart synth --shift new-district`: a new district (the pool teachers review) and a
   held-out set drawn the same way; `kidsart synth` without a shift: the original held-out set
   and the original rows to replay (the first rows of the committed adapters' training set).
2. `kidsart score-district`: the committed adapters score the new district (a stack for the run).
3. For each strategy, a copy of the run and `kidsart review serve` on it: the teacher corrects
   `corrections` artworks to their true labels through `POST /api/artworks/{id}/review`,
   chosen (a) in the review queue's order (most unsure first) or (b) at random (seeded).
4. `kidsart review export --format training-csv`, then `kidsart train --init-from` the committed
   set on that export with the original rows replayed (`train/configs/tiny-continue.yaml`).
5. `kidsart eval` (reference backend) of the committed set and of each new set on both held-out
   sets; the table of mean Spearman (and per dimension) into OUT/loop-study.md and .json.

Nothing here imports the project: it runs what a user runs.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

STRATEGIES = {"a": "review queue order (most unsure first)", "b": "random (seeded)"}
TEACHER_KEY = "loop-study-teacher-key-0001"


class LoopStudyConfig(BaseModel):
    """The study's sizes and seeds (defaults: the run docs/learning-loop.md reports)."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(default=Path("artifacts/loop-study"), description="Work folder (everything is written here).")
    shift: str = Field(default="new-district", description="The distribution shift of the new district.")
    district: int = Field(default=400, ge=10, description="Artworks in the new district (the pool reviewed).")
    corrections: int = Field(default=200, ge=1, description="Artworks the teacher corrects, per strategy.")
    heldout: int = Field(default=200, ge=20, description="Artworks in each held-out set.")
    replay: int = Field(default=400, ge=0, description="Original rows available to replay.")
    config: str = Field(default="tiny-continue", description="Training config of the continued training.")
    seed: int = Field(default=0, description="Seed of strategy (b)'s random choice.")
    profile: str = Field(default="tiny", description="Profile (base, committed deployment set).")


def _kidsart() -> str:
    return str(Path(sys.executable).with_name("kidsart"))


def run(command: list[str], log_file: Path, env: dict | None = None) -> None:
    """One documented command; its output into log_file; a failure stops the study naming the command."""
    shown = " ".join(["kidsart", *command[1:]] if command[0] == _kidsart() else command)
    log.info("$ %s", shown)
    with log_file.open("a", encoding="utf-8") as handle:
        handle.write(f"\n$ {shown}\n")
        handle.flush()
        quiet = {**(env or os.environ), "TQDM_DISABLE": "1"}  # progress bars would fill the log
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=quiet)
    if done.returncode != 0:
        raise RuntimeError(f"`{shown}` failed with exit code {done.returncode}; see {log_file}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def true_labels(labels_csv: Path, dimensions: list[str]) -> dict[str, dict[str, int]]:
    with labels_csv.open(newline="", encoding="utf-8") as handle:
        return {row["name"]: {d: int(row[d]) for d in dimensions} for row in csv.DictReader(handle)}


def teach(run_dir: Path, truth: dict[str, dict[str, int]], count: int, strategy: str, seed: int, log_file: Path):
    """The simulated teacher: the review app on `run_dir`, `count` artworks corrected to their true labels through
    its JSON API, chosen by `strategy`; returns the corrected artworks' names in the order corrected."""
    import httpx

    port = _free_port()
    env = {**os.environ, "KIDSART_REVIEW_KEYS": f"teacher:{TEACHER_KEY}"}
    url = f"http://127.0.0.1:{port}"
    with log_file.open("a", encoding="utf-8") as handle:
        handle.write(f"\n$ kidsart review serve {run_dir} --port {port}\n")
        handle.flush()
        server = subprocess.Popen(
            [_kidsart(), "review", "serve", str(run_dir), "--port", str(port)], stdout=handle, stderr=handle, env=env
        )
    headers = {"Authorization": f"Bearer {TEACHER_KEY}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
            for _ in range(120):
                try:
                    items = api.get("/api/queue").raise_for_status().json()["items"]
                    break
                except httpx.TransportError:
                    time.sleep(0.5)
            else:
                raise RuntimeError(f"the review app on {run_dir} did not start")
            chosen = items[:count] if strategy == "a" else random.Random(seed).sample(items, min(count, len(items)))
            names = []
            for item in chosen:
                name = Path(item["key"]).name
                body = {"levels": truth[name], "seen_version": item["version"]}
                api.post(f"/api/artworks/{item['id']}/review", json=body).raise_for_status()
                names.append(name)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return names


def mean_srcc(report_path: Path) -> tuple[float, dict[str, float]]:
    report = json.loads(report_path.read_text(encoding="utf-8"))
    return report["mean"]["srcc"], {d: v["srcc"] for d, v in report["dimensions"].items()}


def run_study(config: LoopStudyConfig) -> dict:
    """The whole study; returns the table as a dict (also written to OUT/loop-study.json and .md)."""
    kidsart, out = _kidsart(), config.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log_file = out / "commands.log"
    data = {
        "district": ["--n", config.district, "--seed", 601, "--shift", config.shift],
        "heldout-shifted": ["--n", config.heldout, "--seed", 602, "--shift", config.shift],
        "heldout-original": ["--n", config.heldout, "--seed", 502],
        "replay": ["--n", config.replay, "--seed", 1],  # the committed adapters' training set's first rows
    }
    for name, options in data.items():
        run([kidsart, "synth", *map(str, options), "--out", str(out / name)], log_file)
    run_dir = out / "run"
    score = [kidsart, "score-district", str(out / "district" / "images"), "--out", str(run_dir)]
    run([*score, "--profile", config.profile, "--no-progress"], log_file)
    parent = Path(__file__).resolve().parent.parent / "adapters" / "deployments" / f"{config.profile}.yaml"
    with (out / "district" / "labels.csv").open(encoding="utf-8") as handle:
        dimensions = [c for c in next(csv.reader(handle)) if c not in ("name", "grade", "description", "comment")]
    truth = true_labels(out / "district" / "labels.csv", dimensions)
    sets = {"committed": parent}
    corrected = {}
    for strategy in STRATEGIES:
        copy = out / f"run-{strategy}"
        shutil.copytree(run_dir, copy)
        corrected[strategy] = teach(copy, truth, config.corrections, strategy, config.seed, log_file)
        export = out / f"corrections-{strategy}.csv"
        run([kidsart, "review", "export", str(copy), "--format", "training-csv", "--out", str(export)], log_file)
        new_set = out / f"set-{strategy}.yaml"
        train = [kidsart, "train", "--init-from", str(parent), "--data", str(export)]
        train += ["--images", str(out / f"corrections-{strategy}-images"), "--config", config.config]
        train += ["--replay", str(out / "replay" / "labels.csv"), "--replay-images", str(out / "replay" / "images")]
        run([*train, "--out", str(out / f"adapters-{strategy}"), "--deployment", str(new_set)], log_file)
        sets[strategy] = new_set
    table: dict = {"config": json.loads(config.model_dump_json()), "sets": {}}
    for name, path in sets.items():
        row = {}
        for held in ("heldout-shifted", "heldout-original"):
            report = out / f"eval-{name}-{held}.json"
            evaluate = [
                kidsart,
                "eval",
                "--data",
                str(out / held / "labels.csv"),
                "--images",
                str(out / held / "images"),
            ]
            run([*evaluate, "--deployment", str(path), "--profile", config.profile, "--out", str(report)], log_file)
            row[held] = dict(zip(("mean", "dimensions"), mean_srcc(report), strict=True))
        table["sets"][name] = row
    table["corrected"] = {k: len(v) for k, v in corrected.items()}
    (out / "loop-study.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    (out / "loop-study.md").write_text(markdown(table), encoding="utf-8")
    return table


def markdown(table: dict) -> str:
    """The study's table as the docs show it."""
    base = table["sets"]["committed"]
    lines = [
        "| adapters | shifted held-out mean SRCC | change | original held-out mean SRCC | change |",
        "|---|---|---|---|---|",
    ]
    labels = {"committed": "committed (before)", **{k: f"({k}) {v}" for k, v in STRATEGIES.items()}}
    for name, row in table["sets"].items():
        shifted, original = row["heldout-shifted"]["mean"], row["heldout-original"]["mean"]
        d_shift = shifted - base["heldout-shifted"]["mean"]
        d_orig = original - base["heldout-original"]["mean"]
        lines.append(f"| {labels[name]} | {shifted:.3f} | {d_shift:+.3f} | {original:.3f} | {d_orig:+.3f} |")
    lines += ["", "| dimension | " + " | ".join(f"{n} shifted | {n} original" for n in table["sets"]) + " |"]
    lines.append("|---|" + "---|" * (2 * len(table["sets"])))
    for dim in base["heldout-shifted"]["dimensions"]:
        cells = [
            f"{row[h]['dimensions'][dim]:.3f}"
            for row in table["sets"].values()
            for h in ("heldout-shifted", "heldout-original")
        ]
        lines.append(f"| {dim} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
