"""A scored small district and its report, without the real stack (fake router scores)."""

from __future__ import annotations

from pathlib import Path

from serve.district.export import build_table
from serve.district.inputs import discover
from serve.district.report import write_report
from tests.district_fake_router import DIMS, fake_scores


def make_report(tmp: Path) -> tuple[Path, dict]:
    from adapters.errors import InputError
    from adapters.images import decode_image
    from train.district import make_district

    root = tmp / "Bezirk Ölberg"
    info = make_district(root, seed=5, schools=4, grades=3, classes=1, images=48, broken=4, duplicates=2)
    found = discover(root)
    records = {}
    for item in found.items:
        record = {"key": item.key, "sha256": item.sha256, "status": "ok"}
        try:
            data = Path(item.path).read_bytes()
            decode_image(data)
            record["scores"] = fake_scores(data)
        except InputError as exc:
            record.update(status="error", error_type=exc.kind, error=str(exc))
        records[item.key] = record
    frame = build_table(found.items, records, DIMS)
    out = write_report(
        frame,
        DIMS,
        tmp / "report.html",
        paths={i.key: i.path for i in found.items},
        skipped=found.skipped,
        title="District scores: Bezirk Ölberg",
    )
    return out, info
