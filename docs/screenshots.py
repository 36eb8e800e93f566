"""Screenshots of the dashboard for the docs: docs/overview.png, docs/customers.png, docs/customer.png.

Starts the app (uvicorn, loopback, free port) on a trained churnguard home, signs in with a temporary API
key (revoked afterwards) and captures each page at laptop size (1366x850) with headless Chromium.

    .venv/bin/python docs/screenshots.py                  # builds a small demo home in a temp folder (~2 min)
    .venv/bin/python docs/screenshots.py --home models    # or uses an existing one (e.g. after `make demo`)

Needs Debian's Chromium at /usr/bin/chromium (`make browser`).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("screenshots")
DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1366, "height": 850}
DEMO_TRAIN = {
    "snapshots": 3,
    "threads": 2,
    "churn": {"num_leaves_grid": [15], "max_trees": 200},
    "revenue": {"max_trees": 200},
    "promotion": {"max_ece": 0.2},
}


def build_demo_home(home: Path, customers: int) -> None:
    """Synthetic data, a trained and registered champion, and a filled serving store in ``home``."""
    os.environ["CHURNGUARD_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from features.settings import get_settings
    from features.synthetic import generate_dataset
    from serving.batch import PublishRequest, ScoresFile, publish_scores
    from serving.store import SqliteScoreStore
    from training.config import TrainConfig
    from training.pipeline import train

    get_settings.cache_clear()
    data = home / "demo-data"
    log.info("generating %s customers", customers)
    generate_dataset(data, n_customers=customers, seed=11)
    log.info("training")
    train(data, TrainConfig.model_validate(DEMO_TRAIN), get_settings())
    log.info("scoring")
    publish_scores(
        PublishRequest(
            data,
            "models:/churnguard@champion",
            out_file=ScoresFile(home / "scores.parquet"),
            store=SqliteScoreStore(home / "scores.db"),
        )
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_app(home: Path) -> Iterator[str]:
    """The app in a uvicorn process on loopback; yields its base URL."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "CHURNGUARD_HOME": str(home.resolve()), "CHURNGUARD_POLL_SECONDS": "0"}
    command = [sys.executable, "-m", "uvicorn", "serving.app:create_app", "--factory"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=env
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the app did not start") from None
                time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        process.wait(15)


def capture(base: str, key: str, out: Path) -> list[Path]:
    """Sign in and save the overview, the customer list and the top customer's page."""
    from playwright.sync_api import sync_playwright

    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
        page.set_default_timeout(30_000)
        page.goto(base + "/sign-in")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(base + "/")
        page.wait_for_load_state("networkidle")
        for name, path in (("overview", "/"), ("customers", "/customers")):
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(out / f"{name}.png"))
            saved.append(out / f"{name}.png")
        page.locator("table.customers tbody tr th a").first.click()
        page.locator("#reasons").wait_for()
        page.screenshot(path=str(out / "customer.png"))
        saved.append(out / "customer.png")
        browser.close()
    return saved


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, help="a trained churnguard home (default: build a demo one)")
    parser.add_argument("--customers", type=int, default=3000, help="customers in a built demo home")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for the PNGs")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is missing: run `make browser`")
    with tempfile.TemporaryDirectory(prefix="churnguard-screens-") as tmp:
        home = args.home
        if home is None:
            home = Path(tmp) / "home"
            build_demo_home(home, args.customers)
        from serving.keys import KeyStore

        keys = KeyStore(home / "api_keys.json")
        record, key = keys.create("screenshots")
        try:
            with running_app(home) as base:
                for path in capture(base, key, args.out):
                    log.info("saved %s", path)
        finally:
            keys.revoke(record.key_id)


if __name__ == "__main__":
    main()
