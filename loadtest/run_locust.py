"""Headless locust run against the router, with CSV + HTML reports and a one-screen summary.

`kidsart loadtest` / `make loadtest`: starts the stack for a profile (or targets
`--url`), runs locust headless for a bounded time in its own process (locust's
gevent and Ray cannot share one), then reads locust's CSV and prints requests,
failures, shed requests (429/503 with Retry-After), p50/p95/p99 and images/s.

Scenarios:
  nominal   the documented concurrency; any 429/503 counts as a failure; expect 0 failures.
  overload  many more users than the router admits (profile router.max_inflight_images +
            max_queued_images); expect 429/503 + Retry-After answers ("shed") quickly
            instead of timeouts, and 0 other failures.
When it starts the stack, one stack serves every scenario in turn.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import ConfigError

log = logging.getLogger("kidsart.loadtest")

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
FULL_IMAGE_NAMES = ("/v1/score", "/v1/chat/completions [rubric]")
ONE_DIMENSION_NAMES = ("/v1/chat/completions [dimension]",)


class Scenario(BaseModel):
    """One headless locust run: how many users, how fast they start, how long, and what counts as a failure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(ge=1, le=100_000, description="Concurrent locust users.")
    spawn_rate: float = Field(gt=0, description="Users started per second.")
    run_time: str = Field(pattern=r"^\d+[smh]$", description="Locust's run time, e.g. 60s, 10m.")
    shed_ok: bool = Field(description="429/503 with Retry-After count as shed load (overload), not as failures.")
    timeout_s: float = Field(default=60.0, gt=0, description="Timeout of one request, in seconds.")

    def with_changes(self, **changes) -> Scenario:
        """A copy with `changes`, validated (a bad --users or --run-time is an error, not a silent default)."""
        return Scenario.model_validate({**self.model_dump(), **changes})


SCENARIOS = {
    "nominal": Scenario(users=8, spawn_rate=4, run_time="60s", shed_ok=False),
    "overload": Scenario(users=64, spawn_rate=32, run_time="45s", shed_ok=True),
}


def read_stats(csv_prefix: Path) -> dict:
    """Summary figures from locust's <prefix>_stats.csv."""
    rows = list(csv.DictReader((csv_prefix.parent / f"{csv_prefix.name}_stats.csv").open(encoding="utf-8")))
    by_name = {(r["Type"], r["Name"]): r for r in rows}
    total = next((r for r in rows if r["Name"] == "Aggregated"), None)

    def num(row, key, default=0.0):
        try:
            return float(row[key])
        except (KeyError, TypeError, ValueError):
            return default

    shed = sum(int(num(r, "Request Count")) for (kind, _), r in by_name.items() if kind == "SHED")
    failures = sum(
        int(num(r, "Failure Count")) for (kind, name), r in by_name.items() if kind != "SHED" and name != "Aggregated"
    )
    requests = sum(
        int(num(r, "Request Count")) for (kind, name), r in by_name.items() if kind != "SHED" and name != "Aggregated"
    )

    def shed_of(name: str) -> int:  # a shed request is also a (successful) POST row: not a scored image
        return sum(
            int(num(r, "Request Count"))
            for (kind, n), r in by_name.items()
            if kind == "SHED" and n.startswith(name + " ")
        )

    ok_full = sum(
        int(num(r, "Request Count") - num(r, "Failure Count")) - shed_of(name)
        for (kind, name), r in by_name.items()
        if kind == "POST" and name in FULL_IMAGE_NAMES
    )
    ok_one = sum(
        int(num(r, "Request Count") - num(r, "Failure Count")) - shed_of(name)
        for (kind, name), r in by_name.items()
        if kind == "POST" and name in ONE_DIMENSION_NAMES
    )
    score_rows = [r for (kind, name), r in by_name.items() if kind == "POST"]
    return {
        "requests": requests,
        "failures": failures,
        "shed": shed,
        "ok_full_images": ok_full,
        "ok_single_dimension": ok_one,
        "p50_ms": num(total, "50%") if total else None,
        "p95_ms": num(total, "95%") if total else None,
        "p99_ms": num(total, "99%") if total else None,
        "max_ms": num(total, "Max Response Time") if total else None,
        "per_name": {
            f"{r['Type']} {r['Name']}": {
                "requests": int(num(r, "Request Count")),
                "failures": int(num(r, "Failure Count")),
                "p50_ms": num(r, "50%"),
                "p95_ms": num(r, "95%"),
                "p99_ms": num(r, "99%"),
            }
            for r in [*score_rows, *[r for (kind, _), r in by_name.items() if kind == "SHED"]]
        },
    }


def locust_process(
    url: str, scenario: Scenario, out_dir: Path, extra_env: dict[str, str] | None = None, **popen
) -> subprocess.Popen:
    """Start locust headless in a child process (its reports go to out_dir); the caller waits for it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    timing_path = out_dir / "timing.json"
    timing_path.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "KIDSART_LOCUST_SHED_OK": "1" if scenario.shed_ok else "0",
            "KIDSART_LOCUST_TIMEOUT": str(scenario.timeout_s),
            "KIDSART_LOCUST_TIMING": str(timing_path),
        }
    )
    env.update(extra_env or {})
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        url,
        "-u",
        str(scenario.users),
        "-r",
        str(scenario.spawn_rate),
        "-t",
        scenario.run_time,
        "--stop-timeout",
        str(int(scenario.timeout_s) + 5),
        "--csv",
        str(out_dir / "locust"),
        "--html",
        str(out_dir / "locust.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    log.info("locust: %d users for %s against %s", scenario.users, scenario.run_time, url)
    return subprocess.Popen(command, env=env, **popen)


def run_locust(url: str, scenario: Scenario, out_dir: Path, extra_env: dict[str, str] | None = None) -> dict:
    """Run locust headless in a child process; return the summary (also written to out_dir/summary.json)."""
    started = time.monotonic()
    process = locust_process(url, scenario, out_dir, extra_env)
    returncode = process.wait()
    elapsed = time.monotonic() - started
    prefix = out_dir / "locust"
    stats = read_stats(prefix)
    stats.update(images_per_second(out_dir / "timing.json"))
    stats.update(
        {
            "url": url,
            "users": scenario.users,
            "run_time": scenario.run_time,
            "shed_ok": scenario.shed_ok,
            "locust_exit_code": returncode,
            "wall_s": elapsed,
            "reports": {"csv_prefix": str(prefix), "html": str(out_dir / "locust.html")},
        }
    )
    (out_dir / "summary.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats


def images_per_second(timing_path: Path) -> dict:
    """Complete images (every requested dimension back; a one-dimension answer is 1/N of an image for N
    served dimensions) per second of elapsed time, from the first request's start to the last answer's
    end (not the nominal run time)."""
    try:
        timing = json.loads(timing_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.error("locust wrote no timing file %s: images/s unknown", timing_path)
        return {"images_s": None, "elapsed_s": None}
    start, end = timing.get("first_request_start"), timing.get("last_response_end")
    elapsed = end - start if start is not None and end is not None else None
    dimensions = timing.get("dimensions") or 0
    if dimensions < 1:
        log.error("locust's timing file %s says no dimensions were served: images/s unknown", timing_path)
        return {"images_s": None, "elapsed_s": None}
    images = timing["complete_full_images"] + timing["complete_single_dimension"] / dimensions
    return {
        "images_s": images / elapsed if elapsed else None,
        "elapsed_s": elapsed,
        "complete_full_images": timing["complete_full_images"],
        "complete_single_dimension": timing["complete_single_dimension"],
    }


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_summary(name: str, stats: dict) -> str:
    lines = [
        f"locust {name}: {stats['users']} users, {stats['run_time']} against {stats['url']}",
        f"  requests {stats['requests']}  failures {stats['failures']}  shed (429/503 + Retry-After) {stats['shed']}",
        f"  latency p50 {stats['p50_ms']:.0f} ms  p95 {stats['p95_ms']:.0f} ms  p99 {stats['p99_ms']:.0f} ms  max "
        f"{stats['max_ms']:.0f} ms",
        f"  images/s {_fmt(stats['images_s'])} over {_fmt(stats['elapsed_s'])} s elapsed (complete answers: every "
        "requested dimension)",
    ]
    for key, row in stats["per_name"].items():
        lines.append(
            f"    {key:45s} n={row['requests']:5d} fail={row['failures']:4d} p50={row['p50_ms']:.0f} "
            f"p95={row['p95_ms']:.0f} p99={row['p99_ms']:.0f}"
        )
    lines.append(f"  reports: {stats['reports']['csv_prefix']}_*.csv, {stats['reports']['html']}")
    return "\n".join(lines)


def loadtest(
    profile: str = "bench",
    url: str | None = None,
    scenarios: list[str] | None = None,
    users: int | None = None,
    run_time: str | None = None,
    out_dir: Path = Path("runs/loadtest"),
    router_port: int = 8620,
) -> dict:
    """Run the scenarios against `url`, or against one stack started here. Returns {scenario: stats}."""
    chosen = []
    for name in scenarios or list(SCENARIOS):
        if name not in SCENARIOS:
            raise ConfigError(f"unknown scenario {name!r}; choose from {list(SCENARIOS)}")
        scenario = SCENARIOS[name]
        if users is not None and name == "nominal":
            scenario = scenario.with_changes(users=users, spawn_rate=max(1, users / 2))
        if run_time is not None:
            scenario = scenario.with_changes(run_time=run_time)
        chosen.append((name, scenario))

    def run_all(target_url: str) -> dict:
        results = {}
        for name, scenario in chosen:
            stats = run_locust(target_url, scenario, out_dir / name)
            print(format_summary(name, stats), flush=True)
            results[name] = stats
        return results

    if url:
        return run_all(url)
    from adapters.profiles import load_profile
    from serve.stack import Stack

    loaded = load_profile(profile)
    if loaded.base.source == "local":
        from loadtest.bench_inputs import ensure_bench_artifacts

        ensure_bench_artifacts(profile)
    log.info(
        "router admits %d images in flight + %d queued per replica; more get 429",
        loaded.router.max_inflight_images,
        loaded.router.max_queued_images,
    )
    with Stack(loaded, router_port=router_port, log_dir=out_dir / "logs") as stack:
        return run_all(stack.url)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from adapters.logs import setup_logging

    setup_logging()
    parser = argparse.ArgumentParser(description="Headless locust load test of the kidsart router.")
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--url", default=None)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--run-time", default=None)
    parser.add_argument("--out-dir", default="runs/loadtest")
    args = parser.parse_args(argv)
    results = loadtest(args.profile, args.url, args.scenario, args.users, args.run_time, Path(args.out_dir))
    failed = [name for name, stats in results.items() if stats["failures"]]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
