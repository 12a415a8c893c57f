"""Relaunch a FAILED job: a new batch job on the same staged input that computes only what is
left (``robotoff-batch relaunch JOB``).

- The new job is ``<job id>-r<n>`` (``x-r1`` relaunched again is ``x-r2``), labelled
  ``relaunch-of: <the job whose staged input it reads>`` (the launch's first job: the import
  reads that job's product facts) and ``relaunch-alternative`` (which resources it runs on:
  the failed job's, unless asked otherwise).
- Its environment is the one the launch run submitted (the staged input: no re-extraction),
  with its own ``OUTPUT_FILE_PATH`` and ``CARRY_OUTPUT_URIS``: the failed job's output first,
  then every earlier job on the same input (fallbacks, relaunches), latest first. Each new task
  takes the chunks its predecessor listed and computes the rest (docs/CONTRACTS.md, "Carrying
  chunks"); the import leaves out the chunks an earlier import read (``batch_job_chunk``), so a
  product is imported once whether or not the failed job was imported with ``--partial``.
- Refused, nothing submitted: a job that is not FAILED (a SUCCEEDED job is imported, a running
  one is waited for or cancelled first), a job already relaunched, a job whose launch run
  recorded no request.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from robotoff_batch.batch.engine import BatchEngine, JobNotFoundError, JobState, JobStatus
from robotoff_batch.config.models import JobConfig
from robotoff_batch.config.resources_models import BatchResources
from robotoff_batch.follow.fallback import MAX_JOB_ID, chain_position
from robotoff_batch.names import (
    APP_LABEL,
    FALLBACK_OF_LABEL,
    OWNER_LABEL,
    RELAUNCH_ALTERNATIVE_LABEL,
    RELAUNCH_OF_LABEL,
)
from robotoff_batch.staging import Staging

_RELAUNCHED = re.compile(r"^(?P<base>.+)-r(?P<n>\d+)$")


class RelaunchError(RuntimeError):
    """The job cannot be relaunched; the message says why and what to do."""


def input_job_id(status: JobStatus) -> str:
    """The job whose staged input (and product facts) ``status`` reads: the launch's job."""
    labels = status.labels
    return labels.get(RELAUNCH_OF_LABEL) or labels.get(FALLBACK_OF_LABEL) or status.job_id


def relaunch_job_id(job_id: str, relaunched_as: int | None = None) -> str:
    """``x`` -> ``x-r1``, ``x-r1`` -> ``x-r2`` (the head cut to stay within 63 characters)."""
    found = _RELAUNCHED.match(job_id)
    base, n = (found["base"], int(found["n"]) + 1) if found else (job_id, 1)
    n = relaunched_as or n
    suffix = f"-r{n}"
    return base[: MAX_JOB_ID - len(suffix)].rstrip("-") + suffix


def alternative_of(status: JobStatus) -> int:
    """Which resources the job ran on: 0 the config's own, i the i-th fallback alternative."""
    label = status.labels.get(RELAUNCH_ALTERNATIVE_LABEL, "")
    if label.isdigit():
        return int(label)
    return chain_position(status)[1]


def resources_of(config: JobConfig, alternative: int) -> BatchResources:
    if alternative == 0:
        return config.resources
    alternatives = config.alternatives()
    if not 1 <= alternative <= len(alternatives):
        raise RelaunchError(
            f"alternative {alternative} does not exist: the config lists {len(alternatives)} "
            "fallback(s) (0 is its own resources)"
        )
    return alternatives[alternative - 1]


def earlier_outputs(
    engine: BatchEngine, staging: Staging, job_type: str, status: JobStatus
) -> list[str]:
    """The output URIs to carry: ``status``'s, then every other job on the same staged input
    (its fallback chain, its relaunches), latest first."""
    first = input_job_id(status)
    members: dict[str, JobStatus] = {}
    for label in (FALLBACK_OF_LABEL, RELAUNCH_OF_LABEL):
        for s in engine.list_jobs(labels=dict([APP_LABEL, (label, first)])):
            members[s.job_id] = s
    try:
        members.setdefault(first, engine.get_job(job_id=first))
    except JobNotFoundError:
        pass
    members.pop(status.job_id, None)
    latest_first = sorted(
        members.values(),
        key=lambda s: s.create_time.timestamp() if s.create_time else 0.0,
        reverse=True,
    )
    ordered = [status.job_id] + [s.job_id for s in latest_first]
    return [f"{staging.job_uri(job_type=job_type, job_id=j)}/output" for j in ordered]


@dataclass(frozen=True)
class Relaunched:
    job_id: str  # the failed job
    new_job: JobStatus
    alternative: int
    carried_from: list[str]  # output URIs whose chunks the new tasks take, in order


def relaunch_failed(
    *,
    engine: BatchEngine,
    staging: Staging,
    config: JobConfig,
    job_type: str,
    job_id: str,
    launch_environment: Callable[[str, str], Mapping[str, str]],
    submit: Callable[[str, BatchResources, Mapping[str, str], Mapping[str, str]], JobStatus],
    alternative: int | None = None,
) -> Relaunched:
    """Submit the relaunch of the FAILED job ``job_id``; :class:`RelaunchError` (nothing
    submitted) when it cannot be. ``launch_environment(launch run id, first job id)`` is the
    environment the launch run submitted; ``submit(new id, resources, environment, labels)``
    creates the job."""
    try:
        status = engine.get_job(job_id=job_id)
    except JobNotFoundError:
        raise RelaunchError(f"no batch job {job_id!r}") from None
    if status.state is JobState.SUCCEEDED:
        raise RelaunchError(
            f"{job_id} SUCCEEDED: nothing to relaunch (`robotoff-batch import {job_id}`)"
        )
    if status.state is not JobState.FAILED:
        raise RelaunchError(
            f"{job_id} is {status.state.value}: only a FAILED job is relaunched (wait for it "
            f"to end, or `robotoff-batch cancel {job_id}` first)"
        )
    new_id = relaunch_job_id(job_id)
    try:
        engine.get_job(job_id=new_id)
        raise RelaunchError(
            f"{job_id} was already relaunched as {new_id}: relaunch that one if it failed"
        )
    except JobNotFoundError:
        pass
    owner = status.labels.get(OWNER_LABEL, "")
    first = input_job_id(status)
    if not owner:
        raise RelaunchError(f"{job_id} has no {OWNER_LABEL} label: its launch run is unknown")
    where = alternative if alternative is not None else alternative_of(status)
    resources = resources_of(config, where)
    env = dict(launch_environment(owner, first))
    env["OUTPUT_FILE_PATH"] = f"{staging.job_uri(job_type=job_type, job_id=new_id)}/output"
    carried = earlier_outputs(engine, staging, job_type, status)
    env["CARRY_OUTPUT_URIS"] = ",".join(carried)
    labels = {
        OWNER_LABEL: owner,
        RELAUNCH_OF_LABEL: first,
        RELAUNCH_ALTERNATIVE_LABEL: str(where),
    }
    new = submit(new_id, resources, env, labels)
    return Relaunched(job_id=job_id, new_job=new, alternative=where, carried_from=carried)
