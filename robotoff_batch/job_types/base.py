"""What a job type is: its launch parameters, extraction, staged files, container and import.

A job type is a subclass of :class:`JobType`, generic in its launch config, instantiated as
``JOB_TYPE`` in a module of a job-type package (this one, or one named in
``ROBOTOFF_BATCH_JOB_TYPE_PACKAGES``) with one YAML file in that package's ``job_configs/``;
the pipeline (assets, sensor, CLI) is generated from the registry and never names a job type.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import dagster as dg
import pyarrow as pa

from robotoff_batch.config.models import JobConfig
from robotoff_batch.names import key_prefix
from robotoff_batch.predictions.model import ImportResult, ImportSpec

#: The usual name of the staged input (a job type's first declared staged file).
INPUT_FILE = "input.parquet"

#: The launch config class of a job type.
C = TypeVar("C", bound=dg.Config)


class StagedFilesError(ValueError):
    """An extraction wrote files its job type does not declare, or not its input."""


@dataclass(frozen=True)
class ExtractedInput:
    """Files written by a job type's extraction, to be staged beside each other."""

    rows: int
    files: Mapping[str, Path]  # staged name (one of the job type's staged_files) -> local file
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoOutcome:
    """What ``robotoff-batch demo`` saw of its job, for its job type to summarise."""

    rows: int  # products extracted
    state: str  # the job's final state
    examples: Sequence[Mapping[str, Any]]  # a few imported predictions (operations.examples)
    record: ImportResult | None  # the ledger's record of the import; None: nothing imported


def demo_summary(outcome: DemoOutcome, made: str = "candidate predictions") -> str:
    """The demo's last line: what the job gave (``made``: what its candidates are, in words)
    and what the import did with it."""
    head = f"summary: {outcome.rows} products extracted, job {outcome.state}"
    record = outcome.record
    if record is None:
        return f"{head}, nothing imported"
    text = f"{head}, {record.candidates} {made}; {record.predictions} new predictions"
    if record.predictions_kept:
        text += (
            f", {record.predictions_kept} already stored by an earlier run of the same model "
            "version (kept, as Robotoff's dedup rule does; `make clean` starts afresh)"
        )
    if record.predictions_replaced:
        text += f", {record.predictions_replaced} older-version predictions replaced"
    if record.rows_quarantined:
        text += f", {record.rows_quarantined} bad rows held back (`status JOB` lists them)"
    insights = ", ".join(f"{v} {k}" for k, v in record.insights.items() if v)
    return text + (f"; insights: {insights}" if insights else "; no insight changed")


class JobType(ABC, Generic[C]):
    """One kind of batch job. A subclass sets the class attributes and implements
    :meth:`extract`; the core reads nothing else.

    The container contract (docs/CONTRACTS.md): the container reads ``INPUT_FILE_PATH`` (the
    first of ``staged_files``) and ``<STEM>_FILE_PATH`` for each other staged file, shards by
    ``BATCH_TASK_INDEX``/``BATCH_TASK_COUNT`` and writes ``part-<index:05d>.parquet`` under
    ``OUTPUT_FILE_PATH``; ``local_command`` is the argv that plays it on the local runner
    (the config's ``commands`` are appended).
    """

    #: The job type's name: its YAML file's name, its batch jobs' ``job-type`` label.
    name: ClassVar[str]
    #: The ``dg.Config`` of a launch: what a user selects in the UI or the CLI.
    launch_config: type[C]
    #: Columns of the product dump the extraction needs, with their expected type.
    required_columns: ClassVar[Mapping[str, str]]
    #: argv that plays the container on the local runner.
    local_command: ClassVar[Sequence[str]]
    #: Variables the local runner's job config sets over the YAML's ``environment`` (what the
    #: config chooses that a local process runs differently, e.g. a CPU engine: no GPU).
    local_environment: ClassVar[Mapping[str, str]] = {}
    #: Every file the extraction may stage, by staged name; the first is the container's input.
    staged_files: ClassVar[Sequence[str]] = (INPUT_FILE,)
    #: How the task files become Robotoff rows and insights (see ImportSpec); None: the job
    #: type imports nothing (its finish run records the job's outcome only).
    import_spec: ClassVar[ImportSpec | None] = None
    #: The type of the predictions it imports (for people; the SQL writes it).
    prediction_type: ClassVar[str | None] = None
    #: Staged file holding the product facts the insights read (None: none).
    facts_file: ClassVar[str | None] = None
    description: ClassVar[str] = ""
    #: Launch parameters of ``robotoff-batch demo`` on the shipped sample (its ``--limit``
    #: sets ``limit``); None: the demo does not run this job type. One job type sets it.
    demo_params: ClassVar[Mapping[str, Any] | None] = None

    _REQUIRED: ClassVar[tuple[str, ...]] = (
        "name",
        "launch_config",
        "required_columns",
        "local_command",
    )

    def __init__(self) -> None:
        missing = [a for a in self._REQUIRED if not hasattr(self, a)]
        if missing:
            raise TypeError(f"job type {type(self).__name__} does not set {', '.join(missing)}")

    @abstractmethod
    def extract(
        self,
        dump: str,
        params: C,
        job_config: JobConfig,
        out: Path,
        *,
        dump_schema: pa.Schema | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> ExtractedInput:
        """Write the job's staged files to ``out`` from the dump at ``dump``.

        ``params`` is the launch config, validated (the one check of the parameters);
        ``job_config`` is the YAML file as it is at launch, as the engine that runs the job
        sees it (:meth:`config_for_local_runner` on the local runner), so the extraction
        writes only what that engine needs; ``dump_schema`` is the dump's footer, read once
        by the launch (None: read it); ``progress`` logs a line in the launch run.
        """

    def known_set(self, params: C, job_config: JobConfig, target: Any) -> Any:
        """Incremental launches (issue 22): None, or (the job's model identity, the Arrow
        table of (code, lang, text_hash) it already gave a verdict on, read once from
        ``target``, a PredictionTarget), which :meth:`extract` then gets as ``known`` and
        leaves out. None by default: the job type does not skip."""
        return None

    def config_for_local_runner(self, job_config: JobConfig) -> JobConfig:
        """``job_config`` as the local runner runs it: :attr:`local_environment` over the
        YAML's ``environment`` (the same config unchanged when the job type sets none)."""
        if not self.local_environment:
            return job_config
        resources = job_config.resources
        environment = {**resources.environment, **self.local_environment}
        return job_config.model_copy(
            update={"resources": resources.model_copy(update={"environment": environment})}
        )

    @property
    def input_file(self) -> str:
        """The staged file the container reads (``INPUT_FILE_PATH``)."""
        return self.staged_files[0]

    @property
    def imports(self) -> bool:
        """Whether a SUCCEEDED job's output is imported into Robotoff's database."""
        return self.import_spec is not None

    @property
    def key_prefix(self) -> str:
        """Asset key prefix: ``ingredients-spellcheck`` -> ``ingredients_spellcheck``."""
        return key_prefix(self.name)

    def check_extracted(self, extracted: ExtractedInput) -> None:
        """Refuse files the job type does not declare, and an extraction without its input."""
        undeclared = sorted(set(extracted.files) - set(self.staged_files))
        if undeclared:
            raise StagedFilesError(
                f"{self.name}'s extraction wrote {undeclared}, which its job type does not "
                f"declare in staged_files ({list(self.staged_files)})"
            )
        if self.input_file not in extracted.files:
            raise StagedFilesError(f"{self.name}'s extraction did not write {self.input_file}")

    def facts_at_import(
        self, *, dump_path: str, codes: pa.Array
    ) -> Iterator[pa.RecordBatch] | None:
        """The facts (``import_spec.facts_schema``) of the job's products (``codes``) read
        again, at import time, from the dump at ``dump_path``, newer than the launch's; a
        product it no longer holds marked ``deleted``. None: the job type does not, the
        launch-time facts are used."""
        return None

    def task_environment(
        self,
        job_config: JobConfig,
        *,
        staging_root_uri: str,
        exists: Callable[[str], bool] | None = None,
    ) -> dict[str, str]:
        """Variables the job type adds to its tasks' environment at launch, beside the staged
        files' (e.g. where its model weights are staged). ``exists`` (a staging URI -> bool)
        checks what the tasks will read: a missing prerequisite raises
        :class:`StagedFilesError`, so nothing is submitted. None: not checked (dry runs)."""
        return {}

    def staged_prerequisites(self, job_config: JobConfig) -> list[tuple[str, str]]:
        """Objects the tasks read that are staged once, not per job: (path under the staging
        root, how to stage it), or one ("", why) when the config itself is not usable.
        ``doctor`` checks each exists."""
        return []

    def smoke_check_argv(self, job_config: JobConfig) -> list[str] | None:
        """A command ``robotoff-batch smoke`` runs in the job type's image after its own
        checks (exit 0: passed; its last stdout line a JSON report), or None."""
        return None

    def demo_lines(self, outcome: DemoOutcome) -> list[Any]:
        """What the demo prints after the job's timeline: strings (a line each) and rich
        renderables (tables). The default: the summary line."""
        return [demo_summary(outcome)]

    def __repr__(self) -> str:
        return f"<job type {self.name}>"


def changed_words(original: str, correction: str, limit: int = 4) -> str:
    """The words that differ, ``old → new``, for a table cell: aligned word sequences, so a
    split or joined word reads ``butteroil, → butter oil,`` rather than shifting the rest."""
    a, b = original.split(), correction.split()
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    changes = [
        f"{' '.join(a[i1:i2]) or '∅'} → {' '.join(b[j1:j2]) or '∅'}"
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]
    return "; ".join(changes[:limit]) or "(whitespace only)"
