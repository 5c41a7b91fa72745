"""`kidsart bench`, `kidsart loadtest` and `kidsart soak` (typer and the standard library only at import time)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`. Long only because each command is a nested function whose typer
    options are declared in its signature; each body is short and calls into the package."""

    @app.command("bench")
    def bench(
        profile: str = typer.Option(
            "bench",
            help="Profile name or path (bench: the 21.6 M-parameter CPU test model; bench-auto: the same with dtype "
            "auto).",
        ),
        images: int = typer.Option(16, help="Synthetic artworks to score (all nine dimensions each)."),
        images_dir: str | None = typer.Option(
            None, help="Bench (and check parity on) every image in this folder instead of synthetic ones."
        ),
        out: str = typer.Option("bench.json", help="Where to write the figures as JSON."),
        concurrency: str = typer.Option(
            "",
            help="Client concurrencies tried for the router, the best reported (default: the profile's "
            "router.max_inflight_images, the concurrency it serves at under load).",
        ),
        url: str | None = typer.Option(None, help="Benchmark an already running router instead of starting the stack."),
        router_port: int = typer.Option(8600, help="Router port when the stack is started here."),
        repeats: int = typer.Option(3, min=1, help="Interleaved measured runs per phase; medians are reported."),
        phases: str = typer.Option("reference,engine,router", help="Which of reference, engine, router to run."),
        stock_ops: bool = typer.Option(
            False, help="Also run the engine with vLLM's own CPU LoRA ops (what the plugin buys)."
        ),
        deployment: str | None = typer.Option(
            None, help="Deployment set to bench on the profile's base instead of the profile's own."
        ),
        api_key: str | None = typer.Option(
            None, "--api-key", help="The router's API key (default: $KIDSART_API_KEY).", show_default=False
        ),
    ) -> None:
        """Research loop vs vLLM engine (with and without LoRA) vs router, same images and model."""
        from pathlib import Path

        from loadtest.bench import run_bench
        from loadtest.bench_report import format_summary
        from loadtest.bench_worker import BenchPhaseError
        from serve.client import use_api_key

        use_api_key(api_key)  # the bench's router worker reads it (a router started here has no keys)

        try:
            summary = run_bench(
                profile=profile,
                images=images,
                images_dir=Path(images_dir) if images_dir else None,
                out=Path(out),
                concurrency=[int(c) for c in concurrency.split(",") if c.strip()],
                router_url=url,
                router_port=router_port,
                repeats=repeats,
                phases=tuple(p.strip() for p in phases.split(",") if p.strip()),
                stock_ops=stock_ops,
                deployment=deployment,
            )
        except (BenchPhaseError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(format_summary(summary))
        typer.echo(f"wrote {out}")

    @app.command("bench-district")
    def bench_district(
        profile: str = typer.Option("tiny", help="Profile whose stack is started (once) for both paths."),
        images: int = typer.Option(96, min=8, help="Synthetic artworks per measured run."),
        rounds: int = typer.Option(3, min=1, help="Rounds; each runs both paths once, the order alternating."),
        port: int = typer.Option(8640, help="Router port of the stack started here."),
        out: str = typer.Option("district-paths.json", help="Where to write the figures as JSON."),
    ) -> None:
        """The district job's two ways in, measured: Ray handles to the engine deployment vs the router's URL."""
        import json
        from pathlib import Path

        from loadtest.district_paths import run_district_paths

        figures = run_district_paths(profile, images, rounds, port, Path(out))
        typer.echo(json.dumps(figures["img_s"]))
        typer.echo(f"wrote {out}")

    @app.command("bench-batch")
    def bench_batch(
        profile: str = typer.Option("tiny", help="Profile whose stack is started (once) for every measurement."),
        images: int = typer.Option(64, min=8, help="Artworks per measured district run and per measured batch."),
        rounds: int = typer.Option(2, min=1, help="Rounds; each runs the district job and a batch, order alternating."),
        priority_lines: int = typer.Option(400, min=16, help="Lines of the batch that runs beside locust."),
        port: int = typer.Option(8650, help="Router port of the stack started here."),
        out: str = typer.Option("batch-bench.json", help="Where to write the figures as JSON."),
    ) -> None:
        """The Batch API measured: a batch's images/s against the district job's, and sync p95 under locust's
        nominal load with and without a batch running (docs/batch.md)."""
        import json
        from pathlib import Path

        from loadtest.batch_bench import run_batch_bench

        figures = run_batch_bench(profile, images, rounds, priority_lines, port, Path(out))
        typer.echo(json.dumps({k: figures[k] for k in ("img_s", "batch_vs_district")}))
        typer.echo(json.dumps(figures["priority"]))
        typer.echo(f"wrote {out}")

    @app.command("profile-engine")
    def profile_engine_command(
        profile: str = typer.Option("bench", help="Profile whose offline engine is profiled."),
        images: int = typer.Option(8, min=1, help="Images in the profiled batch (each with every dimension)."),
        base: bool = typer.Option(False, "--base", help="Profile the base model (no LoRA)."),
        out: str = typer.Option("runs/profile", help="Folder for the profiler's tables."),
    ) -> None:
        """Where the engine's time goes: a torch-profiler table of one offline batch (not a benchmark)."""
        from pathlib import Path

        from loadtest.profile_engine import profile_engine

        for table in profile_engine(profile, images, base, Path(out)):
            typer.echo(f"--- {table}")
            typer.echo("\n".join(table.read_text().splitlines()[:40]))

    @app.command("loadtest")
    def loadtest(
        profile: str = typer.Option("bench", help="Profile whose stack is started (ignored with --url)."),
        url: str | None = typer.Option(None, help="Target an already running router."),
        scenario: list[str] = typer.Option(
            ["nominal", "overload"],
            help="nominal (documented concurrency, 0 failures) and/or overload (sheds with 429/503).",
        ),
        users: int | None = typer.Option(
            None, help="Users for the nominal scenario (default: its own, loadtest.run_locust.SCENARIOS)."
        ),
        run_time: str | None = typer.Option(None, help="Locust run time per scenario, e.g. 60s."),
        out_dir: str = typer.Option("runs/loadtest", help="Folder for locust's CSV/HTML reports and summary.json."),
        router_port: int = typer.Option(8620, help="Router port when the stack is started here."),
        api_key: str | None = typer.Option(
            None, "--api-key", help="The router's API key (default: $KIDSART_API_KEY).", show_default=False
        ),
    ) -> None:
        """Headless locust run (bounded time) with CSV + HTML reports and a summary."""
        from pathlib import Path

        from loadtest.run_locust import loadtest as run
        from serve.client import use_api_key

        use_api_key(api_key)  # locust's process inherits it

        results = run(profile, url, scenario, users, run_time, Path(out_dir), router_port)
        if any(stats["failures"] for stats in results.values()):
            raise typer.Exit(1)

    @app.command("soak")
    def soak(
        profile: str = typer.Option("tiny", help="Profile whose stack is started."),
        minutes: float = typer.Option(10.0, min=2.0, max=24 * 60, help="How long locust runs."),
        warmup_s: float = typer.Option(
            60.0, min=10.0, help="Memory is compared with its level this long after the start."
        ),
        users: int | None = typer.Option(None, min=1, help="Locust users (default: the nominal scenario's)."),
        max_growth: float = typer.Option(
            0.10, min=0.0, max=1.0, help="Largest accepted RSS growth after the warm-up (0.10 = 10%)."
        ),
        out_dir: str = typer.Option("runs/soak", help="Folder for soak.json, rss.csv and locust's reports."),
        router_port: int = typer.Option(8640, help="Router port."),
    ) -> None:
        """A long locust run at nominal concurrency: zero failures and flat memory (router, engine), or exit 1."""
        from pathlib import Path

        from loadtest.soak import format_soak
        from loadtest.soak import soak as run

        try:
            summary = run(
                profile, minutes, warmup_s, users, max_growth=max_growth, out_dir=Path(out_dir), router_port=router_port
            )
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(format_soak(summary))
        typer.echo(f"wrote {out_dir}/soak.json, {out_dir}/rss.csv")
        if not summary["passed"]:
            raise typer.Exit(1)
