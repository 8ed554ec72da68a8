"""Open an HTML file in headless Chromium (Debian's ``chromium``): a screenshot, and what the page
saw once loaded (its images' decoded sizes, script errors and console errors)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"]
CHECK = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message || e.type)); }, true);
(function () { var orig = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, " ")); return orig.apply(console, arguments); }; })();
window.addEventListener("load", function () {
  var pre = document.createElement("pre"); pre.id = "__check";
  pre.textContent = JSON.stringify({images: Array.from(document.images).map(function (i) {
    return [i.complete, i.naturalWidth, i.naturalHeight]; }), errors: window.__errors,
    tables: document.querySelectorAll("table.sortable").length});
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_in_chromium(page: Path, screenshot: Path | None, work: Path, size: str = "1280,2400") -> dict:
    """Load ``page`` headless; write ``screenshot`` (PNG; ``None``: none) and return ``{"images": [[complete, w, h]...],
    "errors": [...], "tables": n}`` as the page's own script saw them after ``load``.

    Raises:
        RuntimeError: Chromium is not installed or produced no result.
    """
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    probe = work / f"check-{page.name}"
    text = page.read_text(encoding="utf-8")
    probe.write_text(text.replace("<head>", "<head>" + CHECK, 1), encoding="utf-8")
    common = [exe, *FLAGS, f"--user-data-dir={work / 'chromium-profile'}", f"--window-size={size}"]
    dom = subprocess.run([*common, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="__check">(.*?)</pre>', dom.stdout, re.S)
    if found is None:
        raise RuntimeError(f"no result from chromium: {dom.stderr[-2000:]}")
    if screenshot is not None:
        subprocess.run([*common, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, text=True,
                       timeout=120, check=True)
    return json.loads(html.unescape(found.group(1)))
