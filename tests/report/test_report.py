"""`lora-audit report`: the scan and adapter views of a real scan render, open in headless
Chromium without errors, and every plot decodes to an image of real size."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.cli import app
from browser import chromium, open_in_chromium

REALWORLD = Path(__file__).resolve().parents[3] / "shared" / "realworld"
DOCS = Path(__file__).resolve().parents[2] / "docs"
runner = CliRunner()
needs_chromium = pytest.mark.skipif(chromium() is None, reason="chromium not installed (.ci/run installs it)")


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def check_page(page: Path, tmp_path: Path, *, min_images: int) -> dict:
    shot = tmp_path / f"{page.stem}.png"
    seen = open_in_chromium(page, shot, tmp_path)
    assert seen["errors"] == [], seen["errors"]
    assert len(seen["images"]) >= min_images
    assert all(complete and w >= 300 and h >= 100 for complete, w, h in seen["images"]), seen["images"]
    assert png_size(shot) == (1280, 2400)
    return seen


@pytest.fixture(scope="module")
def realworld_store(tmp_path_factory):
    if not (REALWORLD / "MANIFEST.tsv").is_file():
        pytest.skip("no ../shared/realworld")
    work = tmp_path_factory.mktemp("report")
    res = runner.invoke(app, ["scan", "--registry", str(REALWORLD), "--store", str(work / "s"), "--no-probes"],
                        env={"LORA_AUDIT_CACHE_DIR": str(work / "cache")})
    assert res.exit_code == 0, res.output
    return work / "s"


def test_scan_view_of_the_realworld_scan(realworld_store, tmp_path):
    out = tmp_path / "scan.html"
    res = runner.invoke(app, ["report", "--store", str(realworld_store), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text  # self-contained
    for expected in ("adapter_inert", "pickle_weights_refused", "modules_to_save_weights", "unsupported",
                     "Findings by code and severity", "need attention first"):
        assert expected in text, expected
    # attention first: the first adapter row is failed or inert
    first_row = text.split("need attention first")[1].split("<tbody>")[1].split("</tr>")[0]
    assert "status-inert" in first_row or "status-failed" in first_row
    if chromium() is not None:
        seen = check_page(out, tmp_path, min_images=3)
        assert seen["tables"] >= 2


def test_adapter_view_and_user_errors(realworld_store, tmp_path):
    out = tmp_path / "adapter.html"
    res = runner.invoke(app, ["report", "--store", str(realworld_store), "--adapter",
                              "Desmason__llama-lora__lora-adapter", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "model.layers" in text and "module_zscores" in text and "spectral norm" not in text.split("<body>")[0]
    assert 'alt="spectral norm by layer and module family"' in text  # the layer x module-family heatmap
    if chromium() is not None:
        check_page(out, tmp_path, min_images=2)
    bad = runner.invoke(app, ["report", "--store", str(realworld_store), "--adapter", "nosuch", "--out", str(out)])
    assert bad.exit_code == 2 and "no adapter 'nosuch'" in bad.output
    missing = runner.invoke(app, ["report", "--store", str(tmp_path / "none"), "--out", str(out)])
    assert missing.exit_code == 2 and not (tmp_path / "none").exists()  # read-only: never creates a store


def test_docs_screenshots_exist():
    """The screenshots README shows are renders of this report at the size the tests render."""
    for name in ("report-scan.png", "report-adapter.png"):
        assert png_size(DOCS / name) == (1280, 2400), name


def _png_of(uri: str) -> tuple[int, int]:
    import base64

    data = base64.b64decode(uri.split(",", 1)[1])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_behaviour_against_verdict_names_the_disagreements():
    from audit.report.verdict_plots import behaviour_vs_verdict, disagreements

    points = [("org/drifted-and-complies", "drifted", 0.93, 0.61, 0.0),
              ("org/healthy-and-quiet", "healthy", 0.08, 0.02, 0.0),
              ("org/healthy-but-complies", "healthy", 0.21, 0.44, 0.0),
              ("org/healthy-but-refuses", "review", 0.30, -0.05, 0.35),
              ("org/drifted-but-quiet", "drifted", 0.71, -0.03, 0.0)]
    assert [d[0] for d in disagreements(points)] == ["org/healthy-but-complies", "org/healthy-but-refuses",
                                                      "org/drifted-but-quiet"]
    width, height = _png_of(behaviour_vs_verdict(points))
    assert width >= 600 and height >= 300
    assert behaviour_vs_verdict([]) is None


def test_verdict_timeline_draws_each_recalibration():
    from datetime import datetime, timedelta

    from audit.report.data import AdapterData, Table
    from audit.report.verdict_plots import verdict_timeline

    cols = ["scored_at", "trigger", "outcome", "p_drift", "classifier_id", "method_source", "detector_id",
            "detector_p", "objective", "n_labelled", "explanation", "missing"]
    t0 = datetime(2026, 12, 1, 3, 0)
    rows = [(t0, "scan", "healthy", 0.2, "sft.drift.v1", "card:tags", "sft.drift.v1", 0.2, None, 6, "", ""),
            (t0 + timedelta(days=7), "recalibration", "drifted", 0.8, "any.verdict.v1", "card:tags",
             "sft.drift.v2", 0.7, None, 18, "", "")]
    empty = Table(["module", "block", "layer", "module_type", "spectral_norm", "stable_rank", "singular_values"], [])
    data = AdapterData({}, empty, Table([], []), Table(cols, rows), Table([], []), Table([], []), Table([], []))
    width, height = _png_of(verdict_timeline(data))
    assert width >= 600 and height >= 200
    assert verdict_timeline(AdapterData({}, empty, Table([], []), Table(cols, []), Table([], []), Table([], []),
                                        Table([], []))) is None
