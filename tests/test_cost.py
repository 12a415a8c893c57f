"""Actual cost per job: task attempts x the price table, unknown when timings are missing, the
Cloud Batch task events it is read from, and the summary per job type and month."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import pytest
from google.cloud import batch_v1

from robotoff_batch.batch.cloud_batch import CloudBatchEngine, task_attempts
from robotoff_batch.batch.engine import (
    JobState,
    JobStatus,
    MachineSpec,
    StatusEvent,
    TaskAttempt,
    TaskStatus,
)
from robotoff_batch.batch.local import LocalBatchEngine
from robotoff_batch.config.models import hourly_rate, worst_case_cost
from robotoff_batch.cost.actual import CEILING_LABEL, actual_cost, usd
from robotoff_batch.cost.facts import LaunchFacts, cost_lines, cost_metadata
from robotoff_batch.cost.summary import JobCost, job_type_summary, recorded_costs, summarize
from robotoff_batch.job_types import load_registry
from tests.fakes.settings import FAKE_IMAGE_FAIL, FAKE_IMAGE_OK
from tests.fakes.waiting import wait_until_ended
from tests.test_cloud_batch import make_request

pytest_plugins = ["tests.gcp_fixtures"]

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
L4_STANDARD = MachineSpec("g2-standard-8", "STANDARD", "nvidia-l4", 1)
L4_SPOT = MachineSpec("g2-standard-8", "SPOT", "nvidia-l4", 1)
G2_8_PER_HOUR = 0.896306  # prices.yaml, g2-standard-8 (measured, with its L4)


def attempt(n: int, start_s: float, end_s: float | None, code: int | None = 0) -> TaskAttempt:
    end = T0 + timedelta(seconds=end_s) if end_s is not None else None
    return TaskAttempt(n, T0 + timedelta(seconds=start_s), end, code)


def ran(at_s: float = 0) -> StatusEvent:
    return StatusEvent(
        time=T0 + timedelta(seconds=at_s), type="STATUS_CHANGED", description="",
        new_state=JobState.RUNNING,
    )  # fmt: skip


def job(
    tasks: list[TaskStatus],
    *,
    machine: MachineSpec | None = L4_STANDARD,
    state: JobState = JobState.SUCCEEDED,
    events: tuple[StatusEvent, ...] = (),
) -> JobStatus:
    return JobStatus(
        job_id="ingredients-spellcheck-20261120-100000-abcd",
        state=state,
        labels={"job-type": "ingredients-spellcheck"},
        status_events=events or (ran(),),
        tasks=tuple(tasks),
        create_time=T0,
        machine=machine,
    )


# A task preempted after 10 min and retried (20 min), and a second task of 30 min: 1 h in all.
PREEMPTED_THEN_OK = (attempt(1, 0, 600, 50001), attempt(2, 660, 1860))
RETRIED = [
    TaskStatus(0, "SUCCEEDED", 0, attempts=2, runs=PREEMPTED_THEN_OK),
    TaskStatus(1, "SUCCEEDED", 0, attempts=1, runs=(attempt(1, 0, 1800),)),
]


def test_retries_included_standard_gpu_is_one_hour_of_g2_standard_8() -> None:
    cost = actual_cost(job(RETRIED), engine="cloud-batch")
    assert cost.known and cost.total_usd == pytest.approx(G2_8_PER_HOUR, abs=1e-12)
    assert [(a.task, a.attempt, a.seconds) for a in cost.attempts] == [
        (0, 1, 600.0),
        (0, 2, 1200.0),
        (1, 1, 1800.0),
    ]
    assert cost.task_seconds == 3600.0
    assert cost.label == "actual cost"
    assert cost.explain() == (
        "$0.8963 = 3 attempt(s), 3600.0 s of task time x $0.896306/h "
        "(g2-standard-8 + 1 x nvidia-l4, STANDARD)"
    )


def test_spot_is_the_same_time_at_the_spot_fraction_of_the_ceiling() -> None:
    cost = actual_cost(job(RETRIED, machine=L4_SPOT), engine="cloud-batch")
    assert cost.total_usd == pytest.approx(G2_8_PER_HOUR * 0.4, abs=1e-12)
    assert cost.explain().endswith(
        "x $0.896306/h x 0.4 (SPOT) = $0.358522/h (g2-standard-8 + 1 x nvidia-l4, SPOT)"
    )


def test_gpus_attached_to_n1_are_priced_on_top_of_the_machine() -> None:
    machine = MachineSpec("n1-standard-8", "STANDARD", "nvidia-tesla-t4", 2)
    half_hour = [TaskStatus(0, "SUCCEEDED", 0, attempts=1, runs=(attempt(1, 0, 1800),))]
    cost = actual_cost(job(half_hour, machine=machine), engine="cloud-batch")
    assert cost.total_usd == pytest.approx((0.42 + 2 * 0.36) / 2, abs=1e-12)


def test_the_ceiling_and_the_actual_cost_share_one_hourly_rate() -> None:
    config = load_registry()["ingredients-spellcheck"].config
    res = config.resources
    rate = hourly_rate(
        res.machine_type,
        provisioning_model=res.provisioning_model.value,
        accelerators_type=res.accelerators_type,
        accelerators_count=res.accelerators_count,
    )
    worst = worst_case_cost(res)
    hours = res.max_run_duration_s / 3600 * res.task_count * (1 + res.max_retry_count)
    assert worst.total_usd == pytest.approx(rate.effective_usd * hours, abs=1e-12)
    # the whole worst case, run for real, costs exactly the worst case
    runs = tuple(
        attempt(n + 1, 0, res.max_run_duration_s, 1) for n in range(1 + res.max_retry_count)
    )
    spec = MachineSpec(
        res.machine_type, res.provisioning_model.value, res.accelerators_type,
        res.accelerators_count,
    )  # fmt: skip
    tasks = [TaskStatus(i, "FAILED", 1, len(runs), runs) for i in range(res.task_count)]
    full = actual_cost(job(tasks, machine=spec, state=JobState.FAILED), engine="cloud-batch")
    assert full.total_usd == pytest.approx(worst.total_usd, abs=1e-9)


def test_missing_timings_make_the_cost_unknown_not_zero() -> None:
    no_end = [TaskStatus(0, "FAILED", 50002, attempts=1, runs=(attempt(1, 0, None),))]
    cost = actual_cost(job(no_end, state=JobState.FAILED), engine="cloud-batch")
    assert not cost.known and cost.total_usd is None
    assert cost.explain() == "unknown: task 0 attempt 1: no end time"
    meta = cost_metadata(cost, LaunchFacts(products=100))
    assert "actual_cost_usd" not in meta and "actual_cost_per_1000_products_usd" not in meta
    assert meta["actual_cost"].value == "actual cost: unknown: task 0 attempt 1: no end time"
    assert meta["actual_cost_per_1000_products"].value == "unknown (the cost is unknown)"

    fewer = [TaskStatus(0, "SUCCEEDED", 0, attempts=2, runs=(attempt(2, 0, 60),))]
    assert actual_cost(job(fewer), engine="cloud-batch").unknown == (
        "task 0: 2 attempt(s), run times reported for 1"
    )
    # the job ran, but the engine listed no task (ListTasks failed): unknown
    assert actual_cost(job([]), engine="cloud-batch").unknown == (
        "the job ran but the engine reported no task run times"
    )
    assert "machine type" in str(actual_cost(job(RETRIED, machine=None), engine="x").unknown)
    odd = MachineSpec("z9-mega-1", "STANDARD")
    assert "no price for machine type 'z9-mega-1'" in str(
        actual_cost(job(RETRIED, machine=odd), engine="cloud-batch").unknown
    )
    gone = actual_cost(job([], state=JobState.DELETED), engine="cloud-batch")
    assert gone.unknown == "the job was deleted: its task run times are gone"


def test_a_job_that_never_started_a_task_cost_nothing() -> None:
    queued = StatusEvent(T0, "STATUS_CHANGED", "", new_state=JobState.QUEUED)
    failed = StatusEvent(T0, "STATUS_CHANGED", "no L4 in zone", new_state=JobState.FAILED)
    cost = actual_cost(job([], state=JobState.FAILED, events=(queued, failed)), engine="x")
    assert cost.known and cost.total_usd == 0.0 and cost.explain() == "$0.00: no task ran"
    meta = cost_metadata(cost, LaunchFacts(products=10))
    assert meta["actual_cost_usd"].value == 0.0 and "cost_by_attempt" not in meta
    assert meta["actual_cost_per_1000_products_usd"].value == 0.0


def test_a_running_job_costs_so_far_up_to_now() -> None:
    running = [TaskStatus(0, "RUNNING", None, attempts=0, runs=(attempt(1, 0, None),))]
    now = T0 + timedelta(minutes=30)
    cost = actual_cost(job(running, state=JobState.RUNNING), engine="cloud-batch", now=now)
    assert cost.in_progress and cost.label == "actual cost so far"
    assert cost.total_usd == pytest.approx(G2_8_PER_HOUR / 2, abs=1e-12)


def test_local_runner_figures_say_nothing_was_billed_and_per_1000_products() -> None:
    cost = actual_cost(job(RETRIED), engine="local")
    facts = LaunchFacts(products=120, worst_case_usd=43.02, worst_case="...", ceiling_usd=50.0)
    lines = cost_lines(cost, facts)
    assert lines[0] == (
        "would-be cost (local runner, nothing billed: the same run on the configured machine "
        "in Cloud Batch): $0.8963 = 3 attempt(s), 3600.0 s of task time x $0.896306/h "
        "(g2-standard-8 + 1 x nvidia-l4, STANDARD)"
    )
    assert lines[1] == f"per 1,000 products: ${G2_8_PER_HOUR / 120 * 1000:.4f} (120 products)"
    assert [usd(x) for x in (0, 43.0249, 0.89631, 0.0001124)] == [
        "$0.00",
        "$43.02",
        "$0.8963",
        "$0.000112",
    ]
    assert lines[2] == f"{CEILING_LABEL}: $43.02: ...; max_cost_usd $50.00"
    meta = cost_metadata(cost, facts)
    assert meta["actual_cost_usd"].value == round(G2_8_PER_HOUR, 6)
    assert meta["actual_cost_per_1000_products_usd"].value == round(G2_8_PER_HOUR / 120 * 1000, 6)
    assert meta["production_worst_case_ceiling_usd"].value == 43.02
    assert len(meta["cost_by_attempt"].value.records) == 3
    no_count = cost_lines(cost, LaunchFacts(source="no launch run in this Dagster instance"))
    assert no_count[1] == (
        "per 1,000 products: unknown (no products count: no launch run in this Dagster instance)"
    )


# -- where the run times come from ----------------------------------------------------------


def task_event(at_s: float, text: str, state: str | None = None, code: int | None = None):  # type: ignore[no-untyped-def]
    kwargs = {}
    if state:
        kwargs["task_state"] = batch_v1.TaskStatus.State[state]
    if code is not None:
        kwargs["task_execution"] = batch_v1.TaskExecution(exit_code=code)
    return batch_v1.StatusEvent(
        type_="STATUS_CHANGED",
        description=text,
        event_time=T0 + timedelta(seconds=at_s),
        **kwargs,
    )


def test_cloud_batch_task_events_give_each_attempt_retries_included() -> None:
    events = [
        # the VM takes the task (pulls the image): the attempt's clock starts
        task_event(0, "Task state is updated from PENDING to ASSIGNED on zones/x", "ASSIGNED"),
        task_event(90, "Task state is updated from ASSIGNED to RUNNING on zones/x", "RUNNING"),
        task_event(
            690,
            "Task state is updated from RUNNING to FAILED with exit code 50001.",
            "FAILED",
            50001,
        ),  # fmt: skip
        task_event(700, "Task state is updated from FAILED to PENDING", "PENDING"),
        # no task_state: read from the description; no ASSIGNED reported: RUNNING starts it
        task_event(800, "Task state is updated from ASSIGNED to RUNNING on zones/y"),
        task_event(2000, "Task state is updated from RUNNING to SUCCEEDED on zones/y", None, 0),
        task_event(2000.5, "Task exited with code 0", None, 0),  # a repeated end: ignored
    ]
    got = task_attempts(list(reversed(events)))  # sorted by time, whatever the order
    assert [(a.attempt, a.duration_s(), a.exit_code) for a in got] == [
        (1, 690.0, 50001),
        (2, 1200.0, 0),
    ]
    # a task that failed while its VM pulled the image (never RUNNING) was still an attempt
    setup = task_attempts([events[0], task_event(300, "Task state is updated from ASSIGNED "
                                                      "to FAILED", "FAILED", 50000)])  # fmt: skip
    assert [(a.duration_s(), a.exit_code) for a in setup] == [(300.0, 50000)]
    # an end whose start was not seen, and a start not ended: both unknown durations
    partial = task_attempts([events[2], events[4]])
    assert [(a.start is None, a.end is None) for a in partial] == [(True, False), (False, True)]


def with_machine(request: batch_v1.CreateJobRequest, spot: bool) -> batch_v1.CreateJobRequest:
    models = batch_v1.AllocationPolicy.ProvisioningModel
    policy = batch_v1.AllocationPolicy.InstancePolicy(
        machine_type="g2-standard-8",
        provisioning_model=models.SPOT if spot else models.STANDARD,
        accelerators=[batch_v1.AllocationPolicy.Accelerator(type_="nvidia-l4", count=1)],
    )
    request.job.allocation_policy = batch_v1.AllocationPolicy(
        instances=[batch_v1.AllocationPolicy.InstancePolicyOrTemplate(policy=policy)]
    )
    return request


def test_cloud_batch_job_cost_through_the_fake_from_its_allocation_policy(
    cloud_batch_engine: CloudBatchEngine, local_batch_backend: LocalBatchEngine
) -> None:
    request = with_machine(
        make_request("spellcheck-costed", image=FAKE_IMAGE_OK, task_count=2), spot=True
    )
    cloud_batch_engine.submit(request=request)
    deadline = time.monotonic() + 30
    while not (status := cloud_batch_engine.get_job(job_id="spellcheck-costed")).state.is_terminal:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert status.machine == L4_SPOT
    cost = actual_cost(status, engine=cloud_batch_engine.name)
    # the backend's own attempt times, through Batch's task events and back
    truth = local_batch_backend.get_job(job_id="spellcheck-costed")
    seconds = sum(r.duration_s() or 0 for t in truth.tasks for r in t.runs)
    assert len(cost.attempts) == 2 and seconds > 0
    assert [t.attempts for t in status.tasks] == [1, 1]
    assert cost.total_usd == pytest.approx(seconds / 3600 * G2_8_PER_HOUR * 0.4, rel=1e-9)


def test_local_runner_retries_are_each_an_attempt_with_its_times(
    local_batch_backend: LocalBatchEngine,
) -> None:
    request = with_machine(make_request("spellcheck-retried", image=FAKE_IMAGE_FAIL), spot=False)
    request.job.task_groups[0].task_spec.max_retry_count = 1
    local_batch_backend.submit(request=request)
    wait_until_ended(local_batch_backend, "spellcheck-retried", 30)
    status = local_batch_backend.get_job(job_id="spellcheck-retried")
    assert status.state is JobState.FAILED and status.machine == L4_STANDARD
    (task,) = status.tasks
    assert [(r.attempt, r.exit_code) for r in task.runs] == [(1, 3), (2, 3)]
    seconds = [r.duration_s() for r in task.runs]
    assert all(s is not None and s > 0 for s in seconds)
    cost = actual_cost(status, engine=local_batch_backend.name)
    assert cost.simulated and len(cost.attempts) == 2
    expected = sum(s or 0.0 for s in seconds) / 3600 * G2_8_PER_HOUR
    assert cost.total_usd == pytest.approx(expected, rel=1e-12)


# -- the summary ------------------------------------------------------------------------------


def test_summary_per_job_type_and_month() -> None:
    def entry(job_id: str, month: str, jt: str, state: JobState, tasks, products):  # type: ignore[no-untyped-def]
        cost = actual_cost(job(tasks, state=state), engine="x")
        return replace(JobCost.of(job(tasks, state=state), cost, jt, products), job_id=job_id,
                       month=month)  # fmt: skip

    one_hour = RETRIED
    half = [TaskStatus(0, "FAILED", 1, 1, (attempt(1, 0, 1800, 1),))]
    unknown = [TaskStatus(0, "FAILED", 1, 1, (attempt(1, 0, None, 1),))]
    rows = summarize(
        [
            entry("a", "2026-11", "spell", JobState.SUCCEEDED, one_hour, 1000),
            entry("b", "2026-11", "spell", JobState.FAILED, half, None),
            entry("c", "2026-11", "spell", JobState.FAILED, unknown, 50),
            entry("d", "2026-10", "spell", JobState.SUCCEEDED, half, 500),
            entry("e", "2026-11", "nutri", JobState.SUCCEEDED, half, 200),
        ]
    )
    got = [
        (r.month, r.job_type, r.jobs, r.not_succeeded, r.task_hours, r.unknown, r.job_ids_unknown)
        for r in rows
    ]
    assert got == [
        ("2026-10", "spell", 1, 0, 0.5, 0, []),
        ("2026-11", "nutri", 1, 0, 0.5, 0, []),
        ("2026-11", "spell", 3, 2, 1.5, 1, ["c"]),
    ]
    november = rows[2]
    assert november.known_usd == pytest.approx(G2_8_PER_HOUR * 1.5, abs=1e-12)
    # per 1,000 products only over the jobs whose cost and count are both known ("a")
    assert november.per_1000 == pytest.approx(G2_8_PER_HOUR, abs=1e-12)
    assert rows[0].per_1000 == pytest.approx(G2_8_PER_HOUR / 2 / 500 * 1000, abs=1e-12)


def test_the_ui_summary_reads_each_jobs_newest_recorded_cost() -> None:
    key = dg.AssetKey(["ingredients_spellcheck", "batch_job"])
    jt = "ingredients-spellcheck"
    ok = "ingredients-spellcheck-20261105-100000-aaaa"
    failed = "ingredients-spellcheck-20261106-100000-bbbb"
    older = "ingredients-spellcheck-20261020-100000-cccc"

    def meta(state: str, tasks: list[TaskStatus], products: int | None) -> dict[str, Any]:
        status = job(tasks, state=JobState(state))
        return {"state": state, **cost_metadata(actual_cost(status, engine="x"),
                                                LaunchFacts(products=products))}  # fmt: skip

    with dg.instance_for_test() as instance:
        report = instance.report_runless_asset_event
        # the sensor's state observations carry no cost: ignored
        report(dg.AssetObservation(key, partition=ok, metadata={"state": "RUNNING"}))
        report(
            dg.AssetMaterialization(key, partition=ok, metadata=meta("SUCCEEDED", RETRIED, 1000))
        )
        half = [TaskStatus(0, "FAILED", 1, 1, (attempt(1, 0, 1800, 1),))]
        report(dg.AssetObservation(key, partition=failed, metadata=meta("FAILED", half, 10)))
        report(
            dg.AssetMaterialization(key, partition=older, metadata=meta("SUCCEEDED", half, None))
        )
        # a second finish run of the same job: its newest record counts, once
        report(
            dg.AssetMaterialization(key, partition=ok, metadata=meta("SUCCEEDED", RETRIED, 1000))
        )
        recorded = recorded_costs(instance, key, jt)
        assert sorted(recorded) == sorted([ok, failed, older])
        assert recorded[failed].state == "FAILED" and recorded[failed].month == "2026-11"
        assert recorded[ok].usd == pytest.approx(G2_8_PER_HOUR, abs=1e-6)
        assert recorded[ok].task_seconds == 3600.0

        current = JobCost("ingredients-spellcheck-20261107-100000-dddd", jt, "2026-11",
                          "SUCCEEDED", None, 0.0, 5)  # fmt: skip
        table = job_type_summary(instance, key, jt, current).value
        rows = [r.data for r in table.records]
        assert [(r["month"], r["jobs"], r["not succeeded"], r["jobs of unknown cost"])
                for r in rows] == [("2026-11", 3, 1, 1), ("2026-10", 1, 0, 0)]  # fmt: skip
        assert rows[0]["cost (USD)"] == pytest.approx(G2_8_PER_HOUR * 1.5, abs=1e-5)
        assert rows[0]["per 1,000 products (USD)"] == usd((G2_8_PER_HOUR * 1.5) / 1010 * 1000)


def test_a_cost_that_cannot_be_worked_out_never_stops_the_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from robotoff_batch.assets import batch_job

    def broken(*_: Any) -> None:
        raise OSError("event log unreachable")

    monkeypatch.setattr(batch_job, "job_facts", broken)
    with dg.instance_for_test() as instance:
        meta = batch_job.outcome_metadata(
            job(RETRIED), engine="cloud-batch", instance=instance, job_type="ingredients-spellcheck"
        )
    assert meta["state"].value == "SUCCEEDED"
    assert meta["actual_cost"].value == (
        "unknown: it could not be worked out (OSError: event log unreachable)"
    )
    assert "actual_cost_usd" not in meta


def test_a_fallback_job_is_costed_per_product_of_its_chains_launch_run() -> None:
    """A capacity fallback (``<first id>-f1``) has no launch run of its own: its products
    count is the launch run's of its chain's first job, and a chain's products count once
    in the summary (its jobs' costs all count)."""
    from robotoff_batch.cost.facts import job_facts
    from robotoff_batch.names import FALLBACK_INDEX_LABEL, FALLBACK_OF_LABEL, OWNER_LABEL

    jt = "ingredients-spellcheck"
    first = job(RETRIED).job_id
    fallback = f"{first}-f1"

    @dg.op
    def launch(context) -> None:  # type: ignore[no-untyped-def]
        for name, meta in (
            ("products", {"rows": 120}),
            ("batch_job_submission", {"production_worst_case_usd": 43.02,
                                      "production_worst_case": "...",
                                      "production_cost_ceiling_usd": 50.0}),
        ):  # fmt: skip
            key = dg.AssetKey(["ingredients_spellcheck", name])
            context.log_event(
                dg.AssetMaterialization(key, metadata={"batch_job_id": first, **meta})
            )

    @dg.job
    def launch_ingredients_spellcheck() -> None:
        launch()

    with dg.instance_for_test() as instance:
        run_id = launch_ingredients_spellcheck.execute_in_process(instance=instance).run_id
        labels = {"job-type": jt, OWNER_LABEL: run_id}
        queued = StatusEvent(T0, "STATUS_CHANGED", "", new_state=JobState.QUEUED)
        cancelled = job([], state=JobState.CANCELLED, events=(queued,))
        first_status = replace(cancelled, labels=labels)
        fallback_status = replace(
            job(RETRIED),
            job_id=fallback,
            labels={**labels, FALLBACK_OF_LABEL: first, FALLBACK_INDEX_LABEL: "1"},
        )

        facts = job_facts(instance, fallback_status)
        assert (facts.products, facts.origin, facts.worst_case_usd) == (120, first, 43.02)
        cost = actual_cost(fallback_status, engine="local")
        lines = cost_lines(cost, facts)
        assert lines[1] == f"per 1,000 products: ${G2_8_PER_HOUR / 120 * 1000:.4f} (120 products)"
        assert lines[2].endswith(f"(from the launch run of {first})")
        assert cost_metadata(cost, facts)["products_of"].value == first
        first_facts = job_facts(instance, first_status)
        assert (first_facts.products, first_facts.origin) == (120, None)

        first_cost = actual_cost(first_status, engine="local")
        assert first_cost.total_usd == 0
        (row,) = summarize(
            [
                JobCost.of(first_status, first_cost, jt, first_facts.products),
                JobCost.of(fallback_status, cost, jt, facts.products),
            ]
        )
        assert row.jobs == 2 and row.products == 120
        assert row.per_1000 == pytest.approx(G2_8_PER_HOUR / 120 * 1000, abs=1e-9)

        # the same from what the finish runs recorded (the UI's summary)
        key = dg.AssetKey(["ingredients_spellcheck", "batch_job"])
        for partition, status, job_cost, job_facts_ in (
            (first, first_status, first_cost, first_facts),
            (fallback, fallback_status, cost, facts),
        ):
            meta = {"state": status.state.value, **cost_metadata(job_cost, job_facts_)}
            instance.report_runless_asset_event(
                dg.AssetMaterialization(key, partition=partition, metadata=meta)
            )
        recorded = recorded_costs(instance, key, jt)
        assert recorded[fallback].chain == first
        assert recorded[fallback].month == recorded[first].month == "2026-11"  # from the ids
        (row,) = summarize(recorded.values())
        assert row.products == 120
        assert row.per_1000 == pytest.approx(G2_8_PER_HOUR / 120 * 1000, abs=1e-6)
