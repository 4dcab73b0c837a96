"""The HTML report renders in a real headless browser (Debian's Chromium)."""

import shutil
import subprocess

import pytest

from oblivio.bench import runner
from oblivio.bench.config import parse_config
from oblivio.bench.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless, and no background connections: this machine's network is closed.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    config = parse_config(
        {
            "name": "browser",
            "seeds": [0, 1],
            "datasets": [{"name": "breast-cancer", "options": {"normalize": "l2"}}],
            "models": [{"name": "logreg", "kind": "logistic"}],
            "unlearners": [{"name": "retrain"}],
            "requests": [{"kind": "remove", "count": 5}],
        }
    )
    runner.run_config(config, tmp_path)
    _, page = write_report(tmp_path)
    screenshot = tmp_path / "report.png"
    dom = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "oblivio report: browser" in dom and "<img" in dom
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1400,1600",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert screenshot.stat().st_size > 20_000  # a blank page is a few KB
