"""The embedded default instance's dagster.yaml: runs launched at once (no run queue to wait
for), an older default of ours brought up to date, a dagster.yaml of the user's own kept."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.run_coordinator import DefaultRunCoordinator
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from robotoff_batch.cli import operations

# main's default before issue 23 (a run queue), with our first line
OLD_DEFAULT = f"""{operations.WRITTEN_BY}
telemetry:
  enabled: false
run_queue:
  dequeue_interval_seconds: 1
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path / "dagster_home"


def test_a_fresh_home_launches_runs_at_once(home: Path) -> None:
    operations.dagster_home()
    assert (home / "dagster.yaml").read_text() == operations.DEFAULT_DAGSTER_YAML
    inst = dg.DagsterInstance.from_config(str(home))
    try:
        # a click (or the sensor's finish request) starts its run: no daemon dequeue tick
        assert type(inst.run_coordinator) is DefaultRunCoordinator
        assert inst.run_monitoring_enabled
        # a tick every 5 s: the skipped ones kept a day
        retention = inst.get_tick_retention_settings(InstigatorType.SENSOR)
        assert retention[TickStatus.SKIPPED] == 1 and retention[TickStatus.SUCCESS] == -1
    finally:
        inst.dispose()


def test_the_sensor_caps_finish_runs_only_where_no_run_queue_holds_them(home: Path) -> None:
    """The embedded instance launches each run at once: the sensor keeps at most 10 finish runs
    in progress (tests/test_follow.py); production's queue (docs/production.md) has its own
    limits, and the sensor then requests every finished job's run."""
    from robotoff_batch.sensors import finish_runs_cap

    operations.dagster_home()
    embedded = dg.DagsterInstance.from_config(str(home))
    queued = home.parent / "queued"
    queued.mkdir()
    (queued / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: QueuedRunCoordinator\n  config:\n    max_concurrent_runs: 4\n"
    )
    production = dg.DagsterInstance.from_config(str(queued))
    try:
        assert finish_runs_cap(embedded) == 10
        assert finish_runs_cap(production) is None
    finally:
        embedded.dispose()
        production.dispose()


def test_an_older_default_of_ours_is_rewritten(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(OLD_DEFAULT)
    operations.dagster_home()
    assert (home / "dagster.yaml").read_text() == operations.DEFAULT_DAGSTER_YAML
    assert not list(home.glob(".dagster.yaml.*"))  # renamed into place, nothing left over


@pytest.mark.parametrize(
    "own",
    [
        "telemetry:\n  enabled: false\n",  # never ours
        OLD_DEFAULT.split("\n", 1)[1],  # ours, its first line deleted to keep it
    ],
)
def test_a_users_own_dagster_yaml_is_kept(home: Path, own: str) -> None:
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(own)
    operations.dagster_home()
    assert (home / "dagster.yaml").read_text() == own
