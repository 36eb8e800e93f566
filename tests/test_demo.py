"""`make demo` end to end: its four real commands on the default data, up to a server answering with the
demo key it printed. (The Makefile recipe is these commands; this test runs them the same way.)"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _churnguard(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from features.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=cwd,
        check=False,
    )


def _demo_recipe() -> list[list[str]]:
    """The churnguard commands of the Makefile's demo recipe, as written there."""
    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    return [line.strip().split()[1:] for line in recipe.splitlines()[1:] if "churnguard" in line]


@pytest.mark.slow
def test_make_demo_trains_a_champion_scores_and_serves_with_a_working_key(tmp_path: Path) -> None:
    env = {**os.environ, "CHURNGUARD_HOME": str(tmp_path / "models"), "CHURNGUARD_POLL_SECONDS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    port = _free_port()
    variables = {"$(DEMO_DATA)": "data/demo", "$(DEMO_CUSTOMERS)": "10000", "$(DEMO_PORT)": str(port)}
    steps = [[variables.get(arg, arg) for arg in step] for step in _demo_recipe()]
    assert [s[0] for s in steps] == ["generate", "train", "score", "serve"]
    for step in steps[:3]:
        result = _churnguard(*step, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "not promoted" not in result.stdout, "the first model must become champion"
    scores = pd.read_csv(tmp_path / "models" / "demo_scores.csv")
    assert len(scores) > 1000 and scores["reasons"].str.len().min() > 2
    again = _churnguard(*steps[1], env=env, cwd=tmp_path)  # a second `make demo` does not retrain
    assert again.returncode == 0 and "not training" in again.stdout

    server = subprocess.Popen(
        [sys.executable, "-c", "from features.cli import main; main()", *steps[3]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        printed, deadline = "", time.monotonic() + 60
        while "serving on" not in printed and time.monotonic() < deadline and server.stdout:
            printed += server.stdout.readline()
        assert "churnguard demo is ready" in printed, printed
        key = re.search(r"(cg_[A-Za-z0-9_\-]+)", printed)
        example = re.search(r"/v1/customers/(\S+)", printed)
        assert key and example, printed
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/v1/customers/{example.group(1)}",
                    headers={"Authorization": f"Bearer {key.group(1)}"},
                    timeout=5,
                )
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert answer is not None and answer.status_code == 200, answer
        assert answer.json()["customer_id"] == example.group(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
