"""`make soak` / `kidsart soak`: a long, bounded locust run watching for failures and memory growth.

Starts the stack for a profile (tiny by default) with an API key on, as a district runs it,
and drives it with the `nominal` locust scenario (the documented concurrency, 8 users; any
429/503 counts as a failure) for `minutes` (default 10). Every `sample_s` seconds it
records the resident memory (RSS) of the router replica(s) (Ray's `ScoringRouter` worker
processes) and of the engine replicas (Ray's `EngineServer` worker processes and the vLLM
processes under them, found again at each sample so a replaced replica would show). It passes when there were zero
failures and
each group's RSS at the end is within `max_growth` (10%) of its RSS after the warm-up
(the first minute: caches, the prefix cache and allocator pools fill there).

Writes `soak.json` (verdict and figures) and `rss.csv` (every sample) beside locust's
CSV/HTML reports in `out_dir`; prints a one-screen summary. Not part of `make test`.
"""

from __future__ import annotations

import csv
import json
import logging
import secrets
import threading
import time
from pathlib import Path

import psutil

from loadtest.run_locust import SCENARIOS, format_summary, images_per_second, locust_process, read_stats

log = logging.getLogger("kidsart.soak")

ROUTER_ACTOR = "ScoringRouter"  # Ray titles a replica's worker process after its deployment class
ENGINE_ACTOR = "EngineServer"


def actor_processes(actor: str) -> list[psutil.Process]:
    """The processes whose command line names `actor` (a Ray worker's title is ray::<...>:<actor>)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(actor in part for part in process.info["cmdline"] or []):
                found.append(process)
        except psutil.Error:
            continue
    return found


def tree_rss(roots: list[psutil.Process]) -> int:
    """RSS of processes and all their descendants, in bytes (0 when they are gone)."""
    processes = []
    for root in roots:
        try:
            processes += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return group_rss(processes)


def group_rss(processes: list[psutil.Process]) -> int:
    """Summed RSS of the processes still alive, in bytes."""
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


class RssSampler:
    """Samples the router replicas' and the engine replicas' RSS every `every_s` seconds in a thread."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = time.monotonic()

    def start(self) -> RssSampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def sample(self) -> dict:
        row = {
            "t_s": round(time.monotonic() - self._started, 1),
            "router_mb": group_rss(actor_processes(ROUTER_ACTOR)) / 2**20,
            "engine_mb": tree_rss(actor_processes(ENGINE_ACTOR)) / 2**20,
        }
        self.samples.append(row)
        return row

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def memory_verdict(samples: list[dict], warmup_s: float, max_growth: float) -> dict:
    """Per group: RSS at the first sample after the warm-up, at the last sample, the growth, and whether it is
    within `max_growth`."""
    after = [s for s in samples if s["t_s"] >= warmup_s]
    if len(after) < 2:
        raise ValueError(f"the soak ended before two samples after its {warmup_s:g} s warm-up: make it longer")
    verdict = {}
    for group in ("router_mb", "engine_mb"):
        warm, end = after[0][group], after[-1][group]
        growth = (end - warm) / warm if warm else float("inf")
        verdict[group.removesuffix("_mb")] = {
            "after_warmup_mb": round(warm, 1),
            "end_mb": round(end, 1),
            "growth": round(growth, 4),
            "ok": growth <= max_growth,
        }
    return verdict


def soak(
    profile: str = "tiny",
    minutes: float = 10.0,
    warmup_s: float = 60.0,
    users: int | None = None,
    sample_s: float = 5.0,
    max_growth: float = 0.10,
    out_dir: Path = Path("runs/soak"),
    router_port: int = 8640,
) -> dict:
    """Run the soak; the summary dict (also in out_dir/soak.json) with "passed"."""
    from adapters.profiles import load_profile
    from serve.stack import Stack

    if minutes * 60 <= warmup_s + 2 * sample_s:
        raise ValueError(f"a {minutes:g}-minute soak leaves no time after its {warmup_s:g} s warm-up")
    nominal = SCENARIOS["nominal"]
    scenario = nominal.with_changes(
        users=users or nominal.users,
        spawn_rate=max(1, (users or nominal.users) / 2),
        run_time=f"{int(minutes * 60)}s",
    )
    api_key = secrets.token_urlsafe(24)  # keys on, as a district runs it; this run's clients only
    out_dir.mkdir(parents=True, exist_ok=True)
    with Stack(load_profile(profile), router_port=router_port, log_dir=out_dir / "logs", api_keys=[api_key]) as stack:
        sampler = RssSampler(sample_s).start()
        try:
            process = locust_process(stack.url, scenario, out_dir, {"KIDSART_API_KEY": api_key})
            locust_exit = process.wait()
        finally:
            sampler.stop()
        sampler.sample()  # the end: load over, stack still up
    stats = read_stats(out_dir / "locust")
    stats.update(images_per_second(out_dir / "timing.json"))
    stats.update(
        {
            "url": stack.url,
            "users": scenario.users,
            "run_time": scenario.run_time,
            "shed_ok": False,
            "locust_exit_code": locust_exit,
            "reports": {"csv_prefix": str(out_dir / "locust"), "html": str(out_dir / "locust.html")},
        }
    )
    memory = memory_verdict(sampler.samples, warmup_s, max_growth)
    summary = {
        "profile": profile,
        "minutes": minutes,
        "warmup_s": warmup_s,
        "max_growth": max_growth,
        "locust": stats,
        "memory": memory,
        "passed": stats["failures"] == 0 and stats["requests"] > 0 and all(m["ok"] for m in memory.values()),
    }
    with (out_dir / "rss.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["t_s", "router_mb", "engine_mb"])
        writer.writeheader()
        writer.writerows(sampler.samples)
    (out_dir / "soak.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def format_soak(summary: dict) -> str:
    lines = [
        f"soak: profile {summary['profile']}, {summary['minutes']:g} min, warm-up {summary['warmup_s']:g} s",
        format_summary("nominal", summary["locust"]),
        f"  resident memory (RSS), after warm-up -> end (limit +{summary['max_growth']:.0%}):",
    ]
    for group, figures in summary["memory"].items():
        lines.append(
            f"    {group:7s} {figures['after_warmup_mb']:8.1f} MB -> {figures['end_mb']:8.1f} MB "
            f"({figures['growth']:+.1%}) {'ok' if figures['ok'] else 'GREW'}"
        )
    lines.append(
        f"  verdict: {'PASSED' if summary['passed'] else 'FAILED'} "
        f"({summary['locust']['failures']} failures of {summary['locust']['requests']} requests)"
    )
    return "\n".join(lines)
