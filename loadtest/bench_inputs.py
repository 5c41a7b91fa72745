"""The benchmark's inputs: seeded synthetic artworks, a caller's folder of images, and the bench artifacts.

Every phase of `kidsart bench` reads the same files from disk (raw uploaded
bytes, so decoding and letter-boxing are timed everywhere). `--images-dir` swaps
the synthetic artworks for the caller's own images; warm-up and the router's
concurrency sweep always use other (synthetic) images, so no measured run
profits from a cache filled by another.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

log = logging.getLogger("kidsart.bench")

IMAGE_SIZES = [(400, 300), (640, 480), (300, 500), (1024, 768), (224, 224), (800, 600)]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


class BenchInputError(ValueError):
    """The caller's benchmark input cannot be used (named in the message)."""


def synthetic_artwork(seed: int, size: tuple[int, int]) -> bytes:
    """The project's synthetic drawing (train.synth) for `seed` at `size`, as PNG (even seeds) or JPEG bytes:
    the benchmark and the load test upload both formats."""
    from train.synth import render_artwork

    image, _ = render_artwork(seed, width=size[0], height=size[1])
    buffer = io.BytesIO()
    if seed % 2:
        image.save(buffer, format="JPEG", quality=90)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(folder: Path, count: int, seed: int, prefix: str) -> list[Path]:
    """`count` synthetic artworks of several sizes (PNG and JPEG) written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        data = synthetic_artwork(seed * 100_003 + i, IMAGE_SIZES[i % len(IMAGE_SIZES)])
        path = folder / f"{prefix}{i:04d}.{'jpg' if (seed * 100_003 + i) % 2 else 'png'}"
        path.write_bytes(data)
        paths.append(path)
    return paths


def copy_images_dir(source: Path, folder: Path, max_bytes: int, max_pixels: int) -> list[Path]:
    """The caller's images, checked (readable, within the router's limits) and copied to `folder`.

    Every file with an image suffix is used, sorted by name; a file that is not a
    readable image within the limits stops the benchmark with its name, so a
    figure never silently covers fewer images than the folder holds.
    """
    from adapters.errors import KidsArtError
    from adapters.images import decode_image

    if not source.is_dir():
        raise BenchInputError(f"--images-dir {source}: not a folder")
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BenchInputError(f"--images-dir {source}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for i, path in enumerate(files):
        data = path.read_bytes()
        try:
            decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels)
        except KidsArtError as exc:
            raise BenchInputError(f"--images-dir: {path.name} cannot be scored: {exc}") from exc
        # A numbered prefix keeps the caller's order and makes names unique after copying.
        copy = folder / f"{i:04d}-{path.name}"
        copy.write_bytes(data)
        copies.append(copy)
    return copies


def ensure_bench_artifacts(profile_name: str) -> None:
    """Build the profile's local base, and its seeded adapters + deployment set, when missing or stale."""
    from adapters.base_builder import ensure_local_base
    from adapters.errors import ConfigError
    from adapters.manifest import load_profile_deployment, read_base_ref, write_deployment
    from adapters.profiles import load_profile
    from adapters.rubric import load_rubric

    profile = load_profile(profile_name)
    ensure_local_base(profile)
    try:
        load_profile_deployment(profile)
        return
    except ConfigError as exc:
        if profile.base.source != "local" or not str(profile.deployment).startswith("artifacts/"):
            raise
        log.info("generating %s's adapters and deployment set (%s)", profile.name, exc)
    from train.init_adapters import make_untrained_adapters

    rubric = load_rubric(profile.rubric)
    out = profile.deployment_path.parent.parent / "adapters" / profile.name
    dirs = make_untrained_adapters(profile.base.resolved_path, rubric, out, rank=min(8, profile.engine.max_lora_rank))
    write_deployment(
        profile.deployment_path,
        name=profile.name,
        rubric=rubric.name,
        base=read_base_ref(profile.base.resolved_path),
        adapter_dirs=dirs,
    )
    load_profile_deployment(profile)
