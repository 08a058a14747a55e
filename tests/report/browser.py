"""Open a report page in Debian's headless Chromium (driven by Playwright's Python package, no browser download)
and say what a person would see: console problems, network requests, each chart's drawn data, load time.

    seen = open_report(path, screenshot="report.png")
    assert not seen.problems and all(n > 0 for n in seen.chart_ink.values())

Skips the calling test when Chromium or Playwright is missing, unless CHATBEAM_REQUIRE_BROWSER=1 (CI installs
both, so there a missing browser fails instead).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHATBEAM_CHROMIUM", "/usr/bin/chromium")
# What works on this machine (docs of the machine): no sandbox as root, and none of Chromium's background traffic.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# The data colours of report/render.py; axes, grid lines and text are greys, so a pixel near one of these is data.
DATA_COLOURS = ["#1b9e77", "#d95f02", "#386cb0", "#9467bd", "#e7298a", "#e6ab02", "#7570b3", "#7f7f7f"]


def require_browser() -> None:
    missing = []
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing.append(f"Chromium ({CHROMIUM}; apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[test]')")
    if missing:
        message = "needs " + " and ".join(missing)
        if os.environ.get("CHATBEAM_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Seen:
    load_s: float  # navigation start → every chart drawn
    problems: list[str] = field(default_factory=list)  # console errors/warnings, uncaught exceptions
    requests: list[str] = field(default_factory=list)  # anything fetched that is not the page itself
    chart_ink: dict[str, int] = field(default_factory=dict)  # data-coloured pixels per [data-chart]
    missing_charts: list[str] = field(default_factory=list)  # [data-chart-missing]: a sentence instead of a chart
    text: str = ""


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def data_pixels(png: bytes, colours: list[str] = DATA_COLOURS, tolerance: int = 40) -> int:
    """Pixels within ``tolerance`` (per channel) of a data colour, alpha-blended lines and bars included."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    targets = [_hex(c) for c in colours]
    count = 0
    for n, (r, g, b) in image.getcolors(maxcolors=image.width * image.height):
        if any(abs(r - tr) <= tolerance and abs(g - tg) <= tolerance and abs(b - tb) <= tolerance
               for tr, tg, tb in targets) and max(r, g, b) - min(r, g, b) > 30:  # saturated: not a grey
            count += n
    return count


def open_report(path: str | Path, *, screenshot: str | Path | None = None, timeout_s: float = 120.0) -> Seen:
    from playwright.sync_api import sync_playwright

    url = Path(path).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}")
                    if m.type in ("error", "warning", "assert") else None)
            page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
            page.on("request", lambda r: requests.append(r.url) if r.url != url else None)
            started = time.monotonic()
            page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            # Bokeh draws after load; a drawn chart has a size and canvases (inside its shadow DOM).
            page.wait_for_function(
                """() => [...document.querySelectorAll('[data-chart]')].every(
                       el => el.getBoundingClientRect().height > 80)""", timeout=timeout_s * 1000)
            keys = page.eval_on_selector_all("[data-chart]", "els => els.map(e => e.dataset.chart)")
            for key in keys:
                page.locator(f"[data-chart={key}] canvas").first.wait_for(state="attached", timeout=timeout_s * 1000)
            load_s = time.monotonic() - started
            page.wait_for_timeout(300)  # the last paint
            seen = Seen(load_s=load_s, problems=problems, requests=requests)
            for key in keys:
                seen.chart_ink[key] = data_pixels(page.locator(f"[data-chart={key}]").screenshot())
            seen.missing_charts = page.eval_on_selector_all("[data-chart-missing]",
                                                            "els => els.map(e => e.dataset.chartMissing)")
            seen.text = page.inner_text("body")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
            return seen
        finally:
            browser.close()
