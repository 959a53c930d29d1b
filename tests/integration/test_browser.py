"""The committed reports' index.html in a real browser: headless Chromium loads each from disk
(no server), runs its script, and shows the tables' values; a screenshot is not blank. Skips
when no Chromium is installed, except where $MVBENCH_REQUIRE_CHROMIUM is set (CI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted(REPO.glob("results/*/index.html"))
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def browser() -> str:
    found = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if found is None:
        why = "no Chromium installed (Debian: apt-get install chromium)"
        if os.environ.get("MVBENCH_REQUIRE_CHROMIUM"):  # CI: the test must run, not skip
            pytest.fail(f"{why} ($MVBENCH_REQUIRE_CHROMIUM is set)")
        pytest.skip(why)
    return found


def headless(*args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    return subprocess.run(
        [browser(), *flags, *args], capture_output=True, text=True, timeout=120, check=True
    )


def test_every_suite_with_committed_runs_has_a_page():
    """`mvbench import` + `mvbench report` rebuild these from results/<suite>/runs/."""
    suites = {p.parent for p in REPO.glob("results/*/runs")}
    assert suites and suites <= {p.parent for p in PAGES}


# The main job's page in the default run; the others (a browser start each) in the slow tier.
CASES = [
    pytest.param(p, id=p.parent.name, marks=() if p.parent.name == "ridge" else pytest.mark.slow)
    for p in PAGES
]


@pytest.mark.parametrize("page", CASES)
def test_a_committed_report_opens_from_disk_with_its_values(page, tmp_path):
    dom = headless("--dump-dom", page.as_uri()).stdout
    table = pd.read_csv(page.parent / "table.csv")
    average = table[table["table"] == "average"].dropna(subset=["mean"])
    assert not average.empty
    for _, row in average.head(12).iterrows():  # the values the page's tables show
        shown = [f"{row['mean']:.{d}f}".replace("-", "\u2212") for d in (3, 2)]  # a true minus
        assert any(v in dom for v in shown), (row.variant, row.metric, shown)
    assert '<pre id="profile">{' in dom  # the script laid out the resolved profile
    grid = re.search(r'<select id="subject">(.*?)</select>', dom)
    if grid is not None:  # the script ran: the grid shows the first subject's clips only
        subjects = re.findall(r'<option value="([^"]+)"', grid.group(1))
        rows = re.findall(r'<tr data-subject="([^"]+)"[^>]*?( hidden="")?>', dom)
        assert rows and all(bool(h) == (s != subjects[0]) for s, h in rows)
    shot = tmp_path / "page.png"
    headless(f"--screenshot={shot}", "--window-size=1280,900", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005  # text on a page, not blank
