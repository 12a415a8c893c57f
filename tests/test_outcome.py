"""How an ended job reads on its own partition: a FAILED and a CANCELLED job, on the local
runner end to end (launch, sensor, finish run) and on Cloud Batch's fake with Cloud Logging's."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import dagster as dg

from robotoff_batch.batch.engine import JobState
from robotoff_batch.follow.metadata import job_outcome
from tests.test_e2e import (
    SLEEPING,
    check_evaluations,
    failure_text,
    instance,  # noqa: F401 (fixture)
    launch,
    launched_job_id,
    make_defs,
    make_resources,
    run_request,
    tick,
    tick_until_done,
)

pytest_plugins = ["tests.gcp_fixtures"]

BATCH_JOB = dg.AssetKey(["ingredients_spellcheck", "batch_job"])


def partition_page(inst: dg.DagsterInstance, job_id: str) -> dict[str, Any]:
    """The partition's newest event, what its Events tab shows first (the asset's Events
    tab filtered to the partition): here an observation, as a failed step materializes
    nothing (the partition stays Failed in the status bar)."""
    records = inst.fetch_observations(
        dg.AssetRecordsFilter(asset_key=BATCH_JOB, asset_partitions=[job_id]), limit=1
    ).records
    assert records, f"no event on partition {job_id}"
    observation = records[0].asset_observation
    assert observation is not None
    materialized = inst.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=BATCH_JOB, asset_partitions=[job_id]), limit=1
    ).records
    assert not materialized  # else the page would show the materialization
    return {k: v.value for k, v in observation.metadata.items()}


def test_a_failed_and_a_cancelled_partition_read_differently(
    tmp_path: Path,
    instance: dg.DagsterInstance,  # noqa: F811 (fixture)
    pg_db: str,
) -> None:
    script = "import sys; [print(f'line {i}') for i in range(50)]; "
    script += "print('CUDA error: no GPU found', file=sys.stderr); sys.exit(3)"
    failing = make_resources(tmp_path / "f", pg_db, command=[sys.executable, "-c", script])
    defs = make_defs(failing)
    failed_id = launched_job_id(launch(defs, instance, limit=10))
    (request,), _, _ = tick_until_done(defs, instance, failing)
    assert not run_request(defs, instance, request).success
    failed = partition_page(instance, failed_id)
    assert failed["state"] == "FAILED"
    assert failed["outcome"].startswith(f"batch job {failed_id} ended FAILED (exit code 3")
    assert failed["outcome"].endswith("CUDA error: no GPU found")
    assert failed["exit_codes"] == "task 0: 3"
    assert "task 0: exit code 3: container exited with code 3" in failed["reason"]
    assert "line 49\nCUDA error: no GPU found" in failed["log_tail"]
    assert failed["last_log_line"] == "CUDA error: no GPU found"
    assert "actual_cost" in failed

    sleeping = make_resources(tmp_path / "c", pg_db, command=SLEEPING)
    defs = make_defs(sleeping)
    cancelled_id = launched_job_id(launch(defs, instance, limit=10))
    tick(defs, instance, sleeping, None)
    cancel = defs.resolve_job_def("cancel_ingredients_spellcheck")
    assert cancel.execute_in_process(instance=instance, partition_key=cancelled_id).success
    (request,), _, _ = tick_until_done(defs, instance, sleeping)
    finished = run_request(defs, instance, request)
    assert not finished.success
    cancelled = partition_page(instance, cancelled_id)
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["outcome"].startswith(f"CANCELLED: batch job {cancelled_id} was cancelled")
    assert "not a failure of its tasks" in cancelled["outcome"]
    assert cancelled["exit_codes"] == "none"  # a killed task is not a failed one
    check = check_evaluations(finished)["batch_job_succeeded"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description == cancelled["outcome"]
    assert failure_text(finished).startswith("CANCELLED: ")
    engine = sleeping["batch_engine"].get_engine()
    assert engine.get_job(job_id=cancelled_id).state == JobState.CANCELLED
    lines = job_outcome(engine, engine.get_job(job_id=cancelled_id)).lines()
    assert lines[0] == f"outcome: {cancelled['outcome']}"


def test_cloud_batch_failed_task_log_from_cloud_logging_in_check_partition_and_status(
    fake_batch_service: Any, pg_db: str, tmp_path: Path, monkeypatch: Any
) -> None:
    """Cloud Batch (the fake, its task run by the local runner) and Cloud Logging (the fake
    on the same server): the failed task's last lines, read by the real Logging client, are
    in the check, on the partition and in what ``status JOB`` prints."""
    from robotoff_batch.definitions import build_definitions
    from robotoff_batch.names import partitions_def_name
    from tests.fakes.fake_batch_service import emulated_cloud_resources
    from tests.fakes.settings import FAKE_IMAGE_FAIL
    from tests.test_cloud_batch import make_request, wait_for

    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    resources = emulated_cloud_resources(fake_batch_service.address, pg_db)
    defs = build_definitions(resources=resources)
    engine = resources["batch_engine"].get_engine()
    engine.submit(request=make_request("spell-cloud-fails", image=FAKE_IMAGE_FAIL))
    wait_for(lambda: engine.get_job(job_id="spell-cloud-fails").state.is_terminal)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions(
            partitions_def_name("ingredients-spellcheck"), ["spell-cloud-fails"]
        )
        finish = defs.resolve_job_def("finish_ingredients_spellcheck")
        result = finish.execute_in_process(
            instance=inst,
            partition_key="spell-cloud-fails",
            asset_selection=[BATCH_JOB],
            raise_on_error=False,
        )
        assert not result.success
        check = check_evaluations(result)["batch_job_succeeded"]
        assert check.description.endswith("(exit code 3): task 0: fatal: no GPU found")
        assert "task 0: working 39\ntask 0: fatal: no GPU found" in str(
            check.metadata["log_tail"].value
        )
        page = partition_page(inst, "spell-cloud-fails")
        assert page["last_log_line"] == "task 0: fatal: no GPU found"
        assert page["logs"].startswith("https://console.cloud.google.com/logs/query")
    lines = job_outcome(engine, engine.get_job(job_id="spell-cloud-fails")).lines()
    assert lines[-1].endswith("task 0: working 39\ntask 0: fatal: no GPU found")
    assert fake_batch_service.logging.calls["ListLogEntries"] >= 2
