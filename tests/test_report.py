"""`lora-audit report`: the scan and adapter views of a real scan render, open in headless
Chromium without errors, and every plot decodes to an image of real size."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.cli import app
from browser import chromium, open_in_chromium

REALWORLD = Path(__file__).resolve().parents[2] / "shared" / "realworld"
DOCS = Path(__file__).resolve().parents[1] / "docs"
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
