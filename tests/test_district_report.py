"""report.html is self-contained and has every section (content checks; the browser check is separate)."""

from __future__ import annotations

import html
import re

from tests.district_report_fixture import make_report


def test_report_is_self_contained_and_complete(tmp_path):
    path, info = make_report(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<meta charset='utf-8'>" in text
    # nothing is fetched from anywhere: every src is a data URL, no scripts, no external stylesheets
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert "<script" not in text and "<link" not in text and "http://" not in text and "https://" not in text
    for anchor in ("histograms", "schools", "grades", "radar", "thumbnails", "failed"):
        assert f"id='{anchor}'" in text
    plots = [s for s in sources if s.startswith("data:image/png")]
    thumbs = [s for s in sources if s.startswith("data:image/jpeg")]
    assert len(plots) >= 6 and len(thumbs) >= 40
    for broken in info["broken"]:
        assert html.escape(broken) in text
    assert "Bezirk Ölberg" in text and "École Sainte-Anne" in text
