"""`kidsart synth-district`: write a synthetic district tree to exercise `kidsart score-district`.

The tree is `<out>/<school>/<grade>/<class>/<student>.<ext>` (one school in three
has no class level and one has an extra `term 2` level, so depths vary), with names
containing spaces and non-ASCII characters, every supported format (png, jpg,
JPEG, webp, bmp, tiff, gif), and the awkward cases a real district has: broken
files (empty, truncated, not an image), duplicates (same content under another
name and a symbolic link inside the tree), hidden files and folders, a symbolic
link leading outside the tree and files that are not images. Artworks come from
`train.synth.render_artwork`. Everything is determined by `--seed`.
A `district.json` next to nothing else (inside the root, skipped as not an image)
records what was made, so tests can check the discovery against it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import typer

log = logging.getLogger(__name__)

SCHOOLS = [
    "Maple Primary",
    "École Sainte-Anne",
    "Grundschule Straße am Park",
    "Escuela Niño Jesús",
    "Škola Čapek",
    "さくら小学校",
    "Østre Skole",
    "Riverside Academy",
]
FIRST_NAMES = [
    "Zoë",
    "José",
    "Łukasz",
    "Søren",
    "Anaïs",
    "Mia",
    "Noah",
    "Ava",
    "Liam",
    "Chloé",
    "Ömer",
    "Jürgen",
    "Siobhán",
    "Björn",
    "Inès",
    "小明",
    "Oliver",
    "Emma",
]
FORMATS = [
    ("png", "PNG"),
    ("jpg", "JPEG"),
    ("webp", "WEBP"),
    ("png", "PNG"),
    ("bmp", "BMP"),
    ("JPEG", "JPEG"),
    ("tiff", "TIFF"),
    ("gif", "GIF"),
    ("jpeg", "JPEG"),
]


def _save(image, path: Path, fmt: str) -> None:
    if fmt == "GIF":
        frames = [image.convert("P", palette=1, colors=64), image.rotate(180).convert("P", palette=1, colors=64)]
        frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=200)
    elif fmt == "JPEG":
        image.save(path, format="JPEG", quality=88)
    else:
        image.save(path, format=fmt)


def _render(seed: int, width: int, height: int):
    from train.synth import render_artwork

    image, _ = render_artwork(seed, width=width, height=height)
    return image


def make_district(
    out: Path,
    *,
    seed: int = 0,
    schools: int = 4,
    grades: int = 3,
    classes: int = 2,
    images: int = 300,
    broken: int = 8,
    duplicates: int = 6,
    width: int = 320,
    height: int = 240,
) -> dict:
    """Write the district tree; return a description of what was written (also saved as district.json)."""
    rng = random.Random(seed)  # one generator, drawn from in this order: names, broken files, duplicates
    out = Path(out)
    _fresh_folder(out)
    folders = _class_folders(out, schools, grades, classes)
    written: list[str] = []
    for i in range(images - broken):
        folder = folders[i % len(folders)]
        ext, fmt = FORMATS[i % len(FORMATS)]
        path = folder / f"{FIRST_NAMES[rng.randrange(len(FIRST_NAMES))]} {i:04d}.{ext}"
        _save(_render(seed * 1_000_003 + i, width, height), path, fmt)
        written.append(path.relative_to(out).as_posix())
    broken_files = _broken_files(out, folders, written, broken, rng)
    duplicate_files: list[str] = []
    for d in range(duplicates):
        source = out / written[rng.randrange(len(written))]
        folder = folders[rng.randrange(len(folders))]
        path = folder / f"copy of {d} {source.name}"
        shutil.copyfile(source, path)
        duplicate_files.append(path.relative_to(out).as_posix())
    hidden, links = _files_to_skip(out, folders, written)
    description = {
        "seed": seed,
        "images": written,
        "broken": broken_files,
        "duplicates": duplicate_files,
        "hidden": [p.relative_to(out).as_posix() for p in hidden],
        "links": links,
        "expected_inputs": len(written) + len(broken_files) + len(duplicate_files) + (1 if "inside" in links else 0),
    }
    (out / "district.json").write_text(json.dumps(description, ensure_ascii=False, indent=1), encoding="utf-8")
    log.info("wrote a district of %d inputs to %s", description["expected_inputs"], out)
    return description


def _fresh_folder(out: Path) -> None:
    """An empty `out`; an earlier synthetic district there is replaced, anything else refused."""
    if out.exists():
        if any(out.iterdir()) and not (out / "district.json").exists():
            from adapters.errors import ConfigError

            raise ConfigError(
                f"{out} exists and is not a synthetic district (no district.json): refusing to replace it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)


def _class_folders(out: Path, schools: int, grades: int, classes: int) -> list[Path]:
    """school/grade/class folders, made; some schools have no class level, one a level deeper."""
    folders: list[Path] = []
    for s in range(schools):
        school = SCHOOLS[s % len(SCHOOLS)] + ("" if s < len(SCHOOLS) else f" {s // len(SCHOOLS) + 1}")
        for g in range(grades):
            grade = out / school / f"Grade {g + 1}"
            if s % 3 == 2:
                folders.append(grade)  # no class level
            elif s % 3 == 1 and g == grades - 1:
                folders.extend(grade / f"Class {chr(65 + c)}" / "term 2" for c in range(classes))  # one level deeper
            else:
                folders.extend(grade / f"Class {chr(65 + c)}" for c in range(classes))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def _broken_files(out: Path, folders: list[Path], written: list[str], broken: int, rng: random.Random) -> list[str]:
    """Empty, truncated, text-as-image and random-byte files: each must become an error row."""
    broken_files: list[str] = []
    for b in range(broken):
        folder = folders[rng.randrange(len(folders))]
        kind = b % 4
        if kind == 0:
            path = folder / f"empty drawing {b}.png"
            path.write_bytes(b"")
        elif kind == 1:
            path = folder / f"truncated ñ {b}.jpg"
            source = next(p for p in written if p.lower().endswith(".jpg"))
            path.write_bytes((out / source).read_bytes()[:300])
        elif kind == 2:
            path = folder / f"not an image {b}.png"
            path.write_text("this is a note, not a picture\n", encoding="utf-8")
        else:
            path = folder / f"garbage {b}.webp"
            path.write_bytes(bytes(rng.randrange(256) for _ in range(2048)))
        broken_files.append(path.relative_to(out).as_posix())
    return broken_files


def _files_to_skip(out: Path, folders: list[Path], written: list[str]) -> tuple[list[Path], dict[str, str]]:
    """Hidden files and folders, non-images, links: all must be skipped (except the inside link)."""
    good_png = (out / written[0]).read_bytes() if written[0].endswith("png") else None
    hidden = [folders[0] / ".DS_Store", folders[0] / f"._{Path(written[0]).name}", out / ".thumbnails" / "cache.png"]
    hidden[2].parent.mkdir()
    for path in hidden:
        path.write_bytes(good_png or b"\x89PNG")
    (folders[1] / "notes.txt").write_text("bring crayons\n", encoding="utf-8")
    (folders[1] / "Thumbs.db").write_bytes(b"\0" * 64)
    links: dict[str, str] = {}
    try:
        outside = folders[2] / "outside link.png"
        os.symlink("/etc/hostname", outside)
        links["outside"] = outside.relative_to(out).as_posix()
        inside = folders[3 % len(folders)] / "shortcut to first.png"
        os.symlink(os.path.relpath(out / written[0], inside.parent), inside)
        links["inside"] = inside.relative_to(out).as_posix()
        loop = folders[0] / "loop"
        os.symlink(os.path.relpath(out, loop.parent), loop)
        links["loop"] = loop.relative_to(out).as_posix()
    except OSError as exc:  # pragma: no cover - file systems without symbolic links
        log.warning("symbolic links not created: %s", exc)
    return hidden, links


def register(app: typer.Typer) -> None:
    @app.command("synth-district")
    def synth_district(
        out: Path = typer.Option(
            ...,
            "--out",
            help="Folder to write the district tree into (an earlier synthetic district there is replaced).",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed: the same seed writes the same tree."),
        schools: int = typer.Option(4, "--schools", min=1, help="Schools."),
        grades: int = typer.Option(3, "--grades", min=1, help="Grades per school."),
        classes: int = typer.Option(2, "--classes", min=1, help="Classes per grade."),
        images: int = typer.Option(300, "--images", min=10, help="Image files in total, broken ones included."),
        broken: int = typer.Option(8, "--broken", min=0, help="Deliberately broken files."),
        duplicates: int = typer.Option(6, "--duplicates", min=0, help="Extra copies of existing artworks."),
    ) -> None:
        """Write a synthetic district (schools/grades/classes, broken, duplicate, hidden files) for score-district."""
        info = make_district(
            out,
            seed=seed,
            schools=schools,
            grades=grades,
            classes=classes,
            images=images,
            broken=broken,
            duplicates=duplicates,
        )
        typer.echo(
            f"wrote {info['expected_inputs']} inputs ({len(info['broken'])} broken, "
            f"{len(info['duplicates'])} duplicates) to {out}"
        )
