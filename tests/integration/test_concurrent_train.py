"""Two ``churnguard train`` runs at once on one CHURNGUARD_HOME (one SQLite MLflow store): both succeed,
both are recorded and registered, and the registry ends with exactly one champion."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import SMALL_TRAIN, Trained
from tests.integration.servers import CHURNGUARD, child_env, copy_home

pytestmark = pytest.mark.integration


def _train_twice_at_once(home: Path, data: Path, config: Path) -> list[subprocess.CompletedProcess[str]]:
    """Start two training runs within milliseconds of each other and wait for both (bounded)."""
    env = child_env(home)
    argv = [str(CHURNGUARD), "train", "--data", str(data), "--config", str(config)]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = []
    deadline = time.monotonic() + 900
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return results


@pytest.mark.parametrize("store", ["fresh", "existing"])
def test_two_concurrent_training_runs_share_one_sqlite_store(
    trained: Trained, tmp_path: Path, store: str
) -> None:
    home = copy_home(trained.home, tmp_path / "home") if store == "existing" else tmp_path / "home"
    before = 1 if store == "existing" else 0
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL_TRAIN))

    results = _train_twice_at_once(home, trained.data, config)

    for result in results:
        assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-4000:]}"
    uri = f"sqlite:///{(home / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("churnguard")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == before + 2 and all(r.info.status == "FINISHED" for r in runs)
    versions = sorted(client.search_model_versions("name='churnguard'"), key=lambda v: int(v.version))
    assert [str(v.version) for v in versions] == [str(i) for i in range(1, before + 3)]
    new = versions[before:]
    assert {v.tags["run_id"] for v in new} <= {r.info.run_id for r in runs}
    assert len({v.tags["run_id"] for v in new}) == 2, "both versions point at the same run"
    # search_model_versions leaves aliases out: ask for each version.
    holders = [
        v.version for v in versions if "champion" in client.get_model_version("churnguard", v.version).aliases
    ]
    assert len(holders) == 1, f"champion held by {holders}"
    champion = client.get_model_version("churnguard", holders[0])
    assert champion.tags["promotion"].startswith("promoted"), champion.tags["promotion"]
    print(
        f"\nconcurrent training ({store} store): both exit 0; versions "
        + ", ".join(f"v{v.version}: {v.tags.get('promotion')}" for v in new)
        + f"; champion v{holders[0]}"
    )
