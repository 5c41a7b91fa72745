"""`kidsart` subcommands of the training side: init-adapters, synth, train, eval.

Only typer and the standard library are imported at module level so that
`kidsart --help` stays instant; each command imports what it needs.
"""

from __future__ import annotations

import typer

from adapters.rubric import DEFAULT_RUBRIC


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`. Long only because each command is a nested function whose typer
    options are declared in its signature; each body is short and calls into the package."""
    from train import district, promote_cli

    district.register(app)  # kidsart synth-district
    promote_cli.register(app)  # kidsart adapters status|promote|rollback

    @app.command("build-base")
    def build_base(
        profile: str = typer.Option("tiny", help="Profile name (adapters/profiles/NAME.yaml) or path."),
        out: str | None = typer.Option(
            None, help="Output folder (default: the profile's rebuild_path, or its path for a non-fixture base)."
        ),
        check: bool = typer.Option(
            False,
            "--check",
            help="Compare the regenerated base with the committed fixture (exit 1 on a mismatch that must not happen).",
        ),
        report: str = typer.Option("", help="With --check: also write the comparison as JSON here."),
    ) -> None:
        """Regenerate a profile's local base from its recipe (never over a committed fixture); --check compares."""
        import json
        from pathlib import Path

        from adapters.base_builder import build_random_base
        from adapters.profiles import load_profile
        from train.base import build_pretrained_base, check_rebuild

        loaded = load_profile(profile)
        if loaded.base.fixture or (loaded.base.build and loaded.base.build.pretrain):
            target = Path(out) if out else loaded.base.resolved_rebuild_path
            ref = build_pretrained_base(loaded, target)
        else:
            if check:
                raise typer.BadParameter(
                    f"profile {profile!r} has no committed fixture base to check against", param_hint="--check"
                )
            target = Path(out) if out else loaded.base.resolved_path
            ref = build_random_base(loaded, target, force=True)
        typer.echo(f"{ref.model_id} {ref.content_hash} -> {target}")
        if not check:
            return
        result = check_rebuild(loaded, target)
        if report:
            Path(report).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        typer.echo(f"case: {result['case']}")
        typer.echo(f"this CPU: {result['this_cpu']['model']} flags {' '.join(result['this_cpu']['flags'])}")
        typer.echo(
            f"fixture made on: {result['fixture_cpu']['model']} flags {' '.join(result['fixture_cpu']['flags'] or [])}"
        )
        for name, same in result["files_identical"].items():
            typer.echo(f"  {name:26s} {'identical' if same else 'DIFFERENT'}")
        w = result["weights"]
        if w.get("same_tensors"):
            typer.echo(
                f"  weights: {'identical' if w['identical'] else 'differ'}; largest |difference| "
                f"{w['max_abs_diff']:.3e} "
                f"({w['worst_tensor']}), {w['tensors_differing']}/{w['tensors']} tensors differ"
            )
        else:
            typer.echo(f"  weights: tensor names differ: {w}")
        scores = result["adapter_scores"]
        typer.echo(
            f"  committed adapters' scores on {scores['images']} fixed images, fixture base vs regenerated base:"
        )
        for dim, diff in scores["difference_by_dimension"].items():
            typer.echo(f"    {dim:22s} mean |d| {diff['mean_abs']:.4f}  max |d| {diff['max_abs']:.4f}")
        typer.echo("check passed" if result["ok"] else "check FAILED")
        if not result["ok"]:
            raise typer.Exit(1)

    @app.command("init-adapters")
    def init_adapters(
        profile: str = typer.Option("tiny", help="Profile whose base the adapters are for."),
        out: str = typer.Option(..., help="Folder to write one adapter per dimension into."),
        rubric: str = typer.Option(DEFAULT_RUBRIC, help="Rubric name or path."),
        seed: int = typer.Option(0, help="Seed."),
        deployment: str = typer.Option("", help="Also write a deployment-set YAML here."),
    ) -> None:
        """Write untrained but distinct LoRA adapters (seeded), e.g. as baselines."""
        from pathlib import Path

        from adapters.manifest import read_base_ref, write_deployment
        from adapters.profiles import load_profile
        from adapters.rubric import load_rubric
        from train.init_adapters import make_untrained_adapters

        loaded = load_profile(profile)
        rub = load_rubric(rubric)
        dirs = make_untrained_adapters(loaded.base.resolved_path, rub, Path(out), seed=seed)
        if deployment:
            write_deployment(
                Path(deployment),
                name=Path(deployment).stem,
                rubric=rub.name,
                base=read_base_ref(loaded.base.resolved_path),
                adapter_dirs=dirs,
            )

    @app.command("synth")
    def synth(
        n: int = typer.Option(..., "--n", min=1, help="Number of artworks to draw."),
        seed: int = typer.Option(..., help="Dataset seed (artwork i uses seed*1000003+i)."),
        out: str = typer.Option(..., help="Output folder: OUT/images/ and OUT/labels.csv."),
        distribution: str = typer.Option(
            "uniform", help="Label distribution: uniform or kidsartbench (its train marginals)."
        ),
        rubric: str = typer.Option(
            DEFAULT_RUBRIC, help="Labels for this rubric: kidsartbench (nine) or creativity5 (five)."
        ),
        shift: str = typer.Option(
            "",
            help="A distribution shift of the drawings' look, same labels (train/synth_shift.py): new-district "
            "(kraft paper, wax crayon, thinner strokes, muted palette).",
        ),
    ) -> None:
        """Draw synthetic children's-drawing-like images with known labels (pipeline checks, not art)."""
        from adapters.errors import ConfigError
        from train.synth import write_dataset

        try:
            path = write_dataset(n, seed, out, distribution=distribution, rubric=rubric, shift=shift or None)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        typer.echo(str(path))

    @app.command("train")
    def train(
        data: str = typer.Option(..., help="Labels CSV (name, one column per dimension, optional grade/description)."),
        images: str = typer.Option(..., help="Folder of the images named in the CSV."),
        out: str = typer.Option(..., help="Output folder: one adapter folder per dimension."),
        profile: str = typer.Option("tiny", help="Profile whose base to train on."),
        rubric: str = typer.Option(DEFAULT_RUBRIC, help="Rubric name or path to a rubric YAML."),
        config: str = typer.Option("tiny", help="Training config name (train/configs/NAME.yaml) or path."),
        dimensions: list[str] | None = typer.Option(
            None, "--dimensions", help="Only these dimensions (repeatable or comma-separated)."
        ),
        shared: bool = typer.Option(False, help="Ablation: one LoRA shared by all dimensions (overrides the config)."),
        loss: str | None = typer.Option(None, help="Override the config's loss: raft or cross_entropy."),
        ce_weight: float | None = typer.Option(None, help="Override the weight of the extra cross-entropy term."),
        epochs: int | None = typer.Option(None, help="Override the config's epochs."),
        no_resume: bool = typer.Option(False, "--no-resume", help="Retrain dimensions that are already done."),
        deployment: str = typer.Option("", help="Also write a deployment-set YAML listing the trained adapters."),
        init_from: str = typer.Option(
            "",
            "--init-from",
            help="Continue this deployment set's adapters on --data (teachers' corrections, `kidsart review export`) "
            "into new versions, instead of training fresh ones.",
        ),
        replay: str = typer.Option(
            "", help="With --init-from: original labels CSV replayed beside the corrections (config's replay_ratio)."
        ),
        replay_images: str = typer.Option("", help="Folder of the images --replay names."),
        version: str = typer.Option(
            "", help="With --init-from: the new adapters' version (default: <parent version>.c<corrections hash>)."
        ),
        dry_run: bool = typer.Option(
            False,
            "--dry-run",
            help="Check the data (rows, labels per dimension) and build the model on the meta device to report "
            "trainable parameters; no training.",
        ),
    ) -> None:
        """Train one PEFT LoRA per rubric dimension with RAFT (or the configured ablation)."""
        import json
        import time
        from pathlib import Path

        from adapters.profiles import load_profile
        from adapters.rubric import load_rubric
        from train.config import dry_run as run_dry
        from train.config import load_train_config

        cfg = load_train_config(config)
        overrides = {}
        if shared:
            overrides["adapter_mode"] = "shared"
        if loss:
            overrides["loss"] = loss
        if ce_weight is not None:
            overrides["ce_weight"] = ce_weight
        if epochs is not None:
            overrides["epochs"] = epochs
        if overrides:
            cfg = cfg.model_validate({**cfg.model_dump(), **overrides})
        rub = load_rubric(rubric)
        prof = load_profile(profile)
        dims = [d for item in (dimensions or []) for d in item.split(",") if d] or None
        from train.dataset import load_dataset

        # a blank dimension cell is "not labelled" (a teachers' review export): each adapter trains on its rows
        dataset = load_dataset(data, images, rub, dims, allow_unlabelled=True)
        if dry_run:
            report = run_dry(cfg, prof.base.resolved_path, rub)
            report["data"] = {
                "rows": len(dataset),
                "labelled": {d: sum(d in s.scores for s in dataset.samples) for d in dataset.dimensions},
            }
            typer.echo(json.dumps(report, indent=2))
            return
        from adapters.manifest import read_base_ref, write_deployment
        from train.trainer import train_adapters

        start = time.perf_counter()
        if init_from:
            from train.continue_training import continue_from

            continue_from(
                cfg, init_from, dataset, prof, Path(out), replay, replay_images, version, deployment, not no_resume
            )
            seconds = time.perf_counter() - start
            typer.echo(f"continued {len(dataset.dimensions)} adapter(s) into {out} in {seconds:.1f} s")
            return
        if replay or version:
            raise typer.BadParameter("--replay and --version continue a deployment: give --init-from too")
        dirs = train_adapters(
            cfg,
            dataset,
            prof.base.resolved_path,
            Path(out),
            resume=not no_resume,
            command="kidsart train "
            + " ".join(f"--{k} {v}" for k, v in [("config", config), ("rubric", rubric), ("profile", profile)]),
        )
        typer.echo(f"trained {len(dirs)} adapter(s) into {out} in {time.perf_counter() - start:.1f} s")
        if deployment:
            write_deployment(
                Path(deployment),
                name=Path(deployment).stem,
                rubric=rub.name,
                base=read_base_ref(prof.base.resolved_path),
                adapter_dirs=dirs,
                prompt_format=cfg.prompt_format,
            )
            typer.echo(f"wrote deployment set {deployment}")

    @app.command("train-feedback")
    def train_feedback_cmd(
        data: str = typer.Option(
            ..., help="Dataset CSV with the rubric's score columns and a `comment` column (kidsart synth writes one)."
        ),
        images: str = typer.Option(..., help="Folder of the images named in the CSV."),
        out: str = typer.Option(..., help="Output folder of the feedback adapter (written atomically)."),
        profile: str = typer.Option("tiny", help="Profile whose base to train on."),
        rubric: str = typer.Option(
            DEFAULT_RUBRIC, help="Rubric whose scores the comments discuss (name or YAML path)."
        ),
        config: str = typer.Option("feedback-tiny", help="Training config name (train/configs/NAME.yaml) or path."),
        epochs: int | None = typer.Option(None, help="Override the config's epochs."),
    ) -> None:
        """Train the feedback adapter: supervised fine-tuning, cross-entropy on the comment's tokens only."""
        import time
        from pathlib import Path

        from adapters.profiles import load_profile
        from adapters.rubric import load_rubric
        from train.config import load_train_config
        from train.dataset import load_dataset
        from train.feedback_train import train_feedback

        cfg = load_train_config(config)
        if epochs is not None:
            cfg = cfg.model_validate({**cfg.model_dump(), "epochs": epochs})
        prof = load_profile(profile)
        dataset = load_dataset(data, images, load_rubric(rubric), require_comment=True)
        start = time.perf_counter()
        folder = train_feedback(
            cfg,
            dataset,
            prof.base.resolved_path,
            Path(out),
            command=f"kidsart train-feedback --config {config} --rubric {rubric} --profile {profile}",
        )
        typer.echo(f"trained the feedback adapter into {folder} in {time.perf_counter() - start:.1f} s")

    @app.command("eval-feedback")
    def eval_feedback_cmd(
        data: str = typer.Option(..., help="Held-out dataset CSV with score columns and a `comment` column."),
        images: str = typer.Option(..., help="Folder of the images named in the CSV."),
        out: str = typer.Option("eval-feedback.json", help="Where to write the JSON report."),
        profile: str = typer.Option(
            "tiny", help="Profile (base, image size, generation settings, default deployment)."
        ),
        deployment: str | None = typer.Option(
            None, help="Deployment-set YAML with a feedback adapter (default: the profile's)."
        ),
        batch_size: int = typer.Option(8, min=1, help="Comments generated per batch."),
        seed: int = typer.Option(0, help="Seed of the random-reference baseline's pairing."),
        descriptions: bool = typer.Option(
            True,
            "--descriptions/--no-descriptions",
            help="Give the CSV's descriptions to the adapters (--no-descriptions: as a caller who sends none).",
        ),
    ) -> None:
        """Compare generated comments with reference comments (SBERT all-MiniLM-L6-v2) and check their grounding."""
        import json
        from pathlib import Path

        from train.eval_feedback import evaluate_feedback

        report = evaluate_feedback(
            Path(data),
            Path(images),
            profile_name=profile,
            deployment_path=Path(deployment) if deployment else None,
            batch_size=batch_size,
            seed=seed,
            use_descriptions=descriptions,
        )
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        keys = ("sbert_mean", "sbert_untrained", "sbert_random_reference", "grounded_strength", "grounded_weakness")
        for key in keys:
            typer.echo(f"{key:24s} {report[key]:.3f}")
        typer.echo(f"{report['meta']['n_images']} images, {report['meta']['runtime_s']} s; report: {out}")

    @app.command("eval")
    def eval_cmd(
        data: str = typer.Option(..., help="Labels CSV."),
        images: str = typer.Option(..., help="Folder of the images named in the CSV."),
        backend: str = typer.Option(
            "reference", help="reference (transformers + PEFT in-process) or router (HTTP API)."
        ),
        decode: str = typer.Option(
            "rail",
            help="rail: expected score over the score tokens (the method); argmax: the most probable level (ablation).",
        ),
        url: str = typer.Option("http://127.0.0.1:8000", help="Router base URL (backend router)."),
        profile: str = typer.Option("tiny", help="Profile (base, image size, default deployment)."),
        deployment: str | None = typer.Option(
            None, help="Deployment-set YAML to evaluate (reference backend; default: the profile's)."
        ),
        dimensions: list[str] | None = typer.Option(None, "--dimensions", help="Only these dimensions."),
        out: str = typer.Option("eval.json", help="Where to write the JSON report."),
        concurrency: int = typer.Option(16, help="Concurrent requests (router backend)."),
        n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95% intervals."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
        api_key: str | None = typer.Option(
            None,
            "--api-key",
            help="The router's API key, backend router (default: $KIDSART_API_KEY).",
            show_default=False,
        ),
    ) -> None:
        """Score a labelled dataset and report Spearman, Pearson, MAE, MSE, QWK with bootstrap 95% CIs."""
        import json
        from pathlib import Path

        from serve.client import use_api_key
        from train.evaluate import evaluate
        from train.metrics import markdown_table

        use_api_key(api_key)

        from train.evaluate import DECODINGS

        if decode not in DECODINGS:
            raise typer.BadParameter(f"{decode!r} is not one of {', '.join(DECODINGS)}", param_hint="--decode")
        dims = [d for item in (dimensions or []) for d in item.split(",") if d] or None
        report = evaluate(
            Path(data),
            Path(images),
            backend=backend,
            decode=decode,
            profile_name=profile,
            deployment_path=Path(deployment) if deployment else None,
            url=url,
            dimensions=dims,
            concurrency=concurrency,
            n_boot=n_boot,
            seed=seed,
        )
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        typer.echo(markdown_table(report))
        meta = report["meta"]
        typer.echo(
            f"\n{meta['n_images']} images, {meta['runtime_s']} s ({meta['images_per_s']} images/s); report: {out}"
        )

    @app.command("calibrate")
    def calibrate_cmd(
        data: str = typer.Option(..., help="Labels CSV of the calibration set (not the set you evaluate on)."),
        images: str = typer.Option(..., help="Folder of the images named in the CSV."),
        deployment: str | None = typer.Option(
            None, help="Deployment-set YAML to calibrate (written in place; default: the profile's)."
        ),
        profile: str = typer.Option("tiny", help="Profile (base, image size, default deployment)."),
        level: float = typer.Option(0.9, min=0.5, max=0.99, help="Coverage the intervals are built for."),
        eps: float = typer.Option(0.05, min=0.001, max=1.0, help="Added to the RAIL std in the normalised error."),
        backend: str = typer.Option(
            "reference", help="reference (in-process) or router (a router serving this deployment set)."
        ),
        url: str = typer.Option("http://127.0.0.1:8000", help="Router base URL (backend router)."),
    ) -> None:
        """Measure each dimension's split-conformal interval on a labelled set and store it in the deployment set:
        every score then carries `interval` [low, high] and `interval_level`."""
        from pathlib import Path

        from train.calibrate import calibrate_deployment

        path, result = calibrate_deployment(
            Path(data),
            Path(images),
            profile_name=profile,
            deployment_path=Path(deployment) if deployment else None,
            level=level,
            eps=eps,
            backend=backend,
            url=url,
        )
        for dim, entry in result.dimensions.items():
            typer.echo(f"{dim}: quantile {entry.quantile:.3f} on {entry.n} artworks ({entry.adapter})")
        typer.echo(f"stored the calibration (level {result.level}, eps {result.eps}) in {path}")

    @app.command("ablate")
    def ablate(
        data: str = typer.Option(..., help="Labels CSV (KidsArtBench format)."),
        images: str = typer.Option(..., help="Folder of the images named in the CSV."),
        out: str = typer.Option(..., help="Output folder: ablation.json, ablation.md, adapters, per-row eval reports."),
        profile: str = typer.Option("tiny", help="Profile whose base to train on."),
        config: str = typer.Option("tiny", help="Training config every trained row starts from."),
        test_fraction: float = typer.Option(0.2, min=0.05, max=0.5, help="Held-out share of the seeded split."),
        seed: int = typer.Option(0, help="Split and bootstrap seed."),
        epochs: int | None = typer.Option(None, min=1, help="Override the config's epochs (e.g. for a quick run)."),
    ) -> None:
        """The paper's ablation table: prompt only, shared vs per-dimension LoRA, cross-entropy vs RAFT, argmax vs
        RAIL.
        """
        from pathlib import Path

        from train.ablate import markdown, run_ablation

        result = run_ablation(
            Path(data),
            Path(images),
            Path(out),
            profile_name=profile,
            config_name=config,
            test_fraction=test_fraction,
            seed=seed,
            epochs=epochs,
        )
        typer.echo(markdown(result))
        typer.echo(f"wrote {Path(out) / 'ablation.json'} and {Path(out) / 'ablation.md'}")

    @app.command("compare-adapters")
    def compare_adapters(
        reference: str = typer.Option(
            ..., help="Folder of per-dimension adapters to compare against (e.g. the committed ones)."
        ),
        candidate: str = typer.Option(..., help="Folder of per-dimension adapters to check (e.g. freshly retrained)."),
        profile: str = typer.Option("tiny", help="Profile whose base both sets were trained on."),
        score_tolerance: float = typer.Option(
            0.1, help="Largest allowed mean |difference| of expected scores per dimension."
        ),
        srcc_tolerance: float = typer.Option(
            0.1, help="Largest allowed difference of the manifests' validation Spearman."
        ),
        out: str = typer.Option("", help="Also write the comparison as JSON here."),
    ) -> None:
        """Check that retrained adapters reproduce a reference set within a tolerance (exit 1 if not)."""
        import json
        from pathlib import Path

        from train.evaluate import compare_adapter_sets

        result = compare_adapter_sets(
            Path(reference),
            Path(candidate),
            profile_name=profile,
            score_tolerance=score_tolerance,
            srcc_tolerance=srcc_tolerance,
        )
        for dim, r in result["dimensions"].items():
            if "error" in r:
                typer.echo(f"{dim:22s} FAIL {r['error']}")
                continue
            typer.echo(
                f"{dim:22s} {'ok  ' if r['ok'] else 'FAIL'} max|dw|={r['max_weight_diff']:.2e} "
                f"mean|dscore|={r['mean_score_diff']:.4f} max|dscore|={r['max_score_diff']:.4f} "
                f"val_srcc={r['val_srcc']}"
            )
        if out:
            Path(out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        typer.echo("reproduced within tolerance" if result["ok"] else "NOT reproduced within tolerance")
        if not result["ok"]:
            raise typer.Exit(1)
