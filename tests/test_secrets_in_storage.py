"""Secrets never reach Dagster's run storage: resources take them as EnvVar."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from robotoff_batch.resources import PredictionStoreResource, build_resources


@pytest.mark.parametrize("target", ["postgres", "robotoff_api"])
def test_connection_string_and_key_are_not_in_run_storage(
    monkeypatch: pytest.MonkeyPatch, pg_db: str, target: str, tmp_path: Path
) -> None:
    secret_url = pg_db + "&application_name=s3cret-marker"
    monkeypatch.setenv("ROBOTOFF_DATABASE_URL", secret_url)
    monkeypatch.setenv("ROBOTOFF_BATCH_IMPORT_TARGET", target)
    monkeypatch.setenv("ROBOTOFF_BATCH_ROBOTOFF_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ROBOTOFF_BATCH_JOB_KEY", "k3y-marker")
    monkeypatch.setenv("ROBOTOFF_BATCH_ROBOTOFF_BUCKET_URI", tmp_path.as_uri())
    resource = build_resources("local")["prediction_store"]

    @dg.asset
    def uses_store(prediction_store: PredictionStoreResource) -> None:
        prediction_store.get_store().imported_jobs(["x"])

    defs = dg.Definitions(assets=[uses_store], resources={"prediction_store": resource})
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=instance).success
    stored = ""
    for run in instance.get_runs():
        stored += serialize_value(run)
        stored += serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
        for record in instance.all_logs(run.run_id):
            stored += serialize_value(record)
    assert "ROBOTOFF_DATABASE_URL" in stored  # the variable's name is shown...
    assert "s3cret-marker" not in stored  # ...never its value
    assert "k3y-marker" not in stored
