"""ingredients-spellcheck: correct typos in the ingredient lists of products.

The job type: its extraction (selection, facts, and the CPU engine's lexicon, cached per dump)
and its :class:`~robotoff_batch.job_types.base.JobType`.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from rich.table import Table
from rich.text import Text

from robotoff_batch.config.models import JobConfig
from robotoff_batch.config.pricing import hourly_rate
from robotoff_batch.job_types.base import (
    INPUT_FILE,
    DemoOutcome,
    ExtractedInput,
    JobType,
    StagedFilesError,
    demo_summary,
)
from robotoff_batch.job_types.ingredients_spellcheck.identity import model_identity
from robotoff_batch.job_types.ingredients_spellcheck.imports import (
    FACTS_FILE,
    IMPORT_SPEC,
    KNOWN_PREDICTIONS_SQL,
    PREDICTION_TYPE,
    facts_at_import,
)
from robotoff_batch.job_types.ingredients_spellcheck.lexicon import build_lexicon
from robotoff_batch.job_types.ingredients_spellcheck.selection import (
    SPELLCHECK_REQUIRED_COLUMNS,
    SpellcheckLaunch,
    launch_pass,
    spellcheck_sql,
)
from robotoff_batch.job_types.ingredients_spellcheck.weights import (
    STAGED_MARKER,
    WEIGHTS_URI_ENV,
    WeightsError,
    pinned_model_of,
)
from robotoff_batch.paths import CONTAINERS_DIR, home_dir
from robotoff_batch.predictions.known import ModelIdentity
from robotoff_batch.predictions.model import named_statements
from robotoff_batch.predictions.target import PredictionTarget

logger = logging.getLogger(__name__)

LEXICON_FILE = "lexicon.parquet"


def engine_that_runs(job_config: JobConfig) -> str:
    """The correction engine the container will run, chosen by the job config (as the engine
    that runs the job sees it: the local runner's is ``SPELLCHECK_ENGINE=lexicon-cpu``, see
    ``local_environment``), by the container's own rule: an ``--engine`` argument in the
    config's ``commands``, else ``SPELLCHECK_ENGINE``, else lexicon-cpu."""
    argv = list(job_config.resources.commands)
    for i, arg in enumerate(argv):
        if arg == "--engine" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--engine="):
            return arg.split("=", 1)[1]
    return job_config.resources.environment.get("SPELLCHECK_ENGINE", "").strip() or "lexicon-cpu"


def extract(
    *,
    dump_path: str,
    params: SpellcheckLaunch,
    work_dir: Path,
    job_config: JobConfig,
    dump_schema: pa.Schema | None = None,
    progress: Callable[[str], None] | None = None,
    known: pa.Table | None = None,
) -> ExtractedInput:
    """One pass over the dump: the selected products, their facts and, with the CPU engine,
    its lexicon, counted in the same pass on a dump whose lexicon is not cached yet (vLLM
    never reads it, so a GPU job does not pay the lexicon's counting or upload).
    ``params`` were validated by :class:`SpellcheckLaunch`; ``dump_schema`` is the dump's
    footer as the launch read it (None: read here); ``known``: the texts the job's model
    already saw (skip_unchanged, :meth:`IngredientsSpellcheck.known_set`), left out."""
    work_dir.mkdir(parents=True, exist_ok=True)
    engine = engine_that_runs(job_config)
    cache: Path | None = None
    hit = False
    if engine == "lexicon-cpu":
        cache = lexicon_cache_path(dump_path)
        hit = cache.exists()
    # One pass over the dump: the selection, its facts and, for the CPU engine on a dump whose
    # lexicon is not cached yet, the lexicon's counts.
    scan_dir = work_dir / ".pass"
    done = launch_pass(
        dump_path=dump_path,
        work_dir=scan_dir,
        input_name=INPUT_FILE,
        limit=params.limit,
        min_fraction=params.min_fraction,
        max_fraction=params.max_fraction,
        languages=params.languages or None,
        countries=params.countries or None,
        min_popularity=params.min_popularity,
        codes=params.codes or None,
        facts=True,
        lexicon=engine == "lexicon-cpu" and not hit,
        progress=progress,
        memory_limit=launch_memory_limit(),
        dump_schema=dump_schema,
        known=known,
    )
    input_path = work_dir / INPUT_FILE
    os.replace(done.input_path, input_path)
    files = {INPUT_FILE: input_path}
    if done.facts_path is not None:  # written by the pass (none for an empty selection)
        facts_path = work_dir / FACTS_FILE
        os.replace(done.facts_path, facts_path)
        files[FACTS_FILE] = facts_path
    shutil.rmtree(scan_dir, ignore_errors=True)
    metadata: dict[str, object] = {
        "extraction_s": round(done.duration_s, 3),
        "spellcheck_engine": engine,
        **done.metadata(),
        "selected": done.rows,
    }
    if known is not None:
        metadata["skipped_unchanged"] = done.counts["skipped_unchanged"]
        metadata["known_texts"] = known.num_rows
    metadata.update(expected_cost(job_config, engine, done.rows))
    if cache is not None and done.lexicon is not None:
        store_lexicon(cache, done.lexicon)
    if done.rows and cache is not None:
        lexicon_path = work_dir / LEXICON_FILE
        shutil.copyfile(cache, lexicon_path)
        files[LEXICON_FILE] = lexicon_path
        metadata["lexicon_words"] = pq.read_metadata(lexicon_path).num_rows
        metadata["lexicon_cache"] = "hit" if hit else "built"
    return ExtractedInput(rows=done.rows, files=files, metadata=metadata)


#: Products one task corrects per hour, by engine: vLLM from the seed's GPU trial (1,000
#: products in 1:30 on one L4, README "Measured"), the CPU engine from its benchmark (15,627
#: texts/s warm on one core, benchmarks/spellcheck_benchmark.py). An estimate, not a ceiling.
PRODUCTS_PER_TASK_HOUR = {"vllm": 40_000, "lexicon-cpu": 50_000_000}


def expected_cost(job_config: JobConfig, engine: str, products: int) -> dict[str, object]:
    """The cost ceiling (``max_cost_usd``) and the expected cost of correcting ``products``
    (VM hours at the config's hourly rate, from the engine's throughput)."""
    rate = hourly_rate(
        job_config.resources.machine_type,
        provisioning_model=job_config.resources.provisioning_model,
        accelerators_type=job_config.resources.accelerators_type,
        accelerators_count=job_config.resources.accelerators_count,
    )
    hours = products / PRODUCTS_PER_TASK_HOUR.get(engine, PRODUCTS_PER_TASK_HOUR["vllm"])
    return {
        "cost_ceiling_usd": float(job_config.max_cost_usd),
        "expected_cost_usd": round(rate.effective_usd * hours, 4),
        "expected_cost": f"{products} products / {PRODUCTS_PER_TASK_HOUR.get(engine)} per "
        f"task-hour ({engine}) x ${rate.effective_usd:.6f}/h",
    }


def launch_memory_limit() -> str:
    """DuckDB's memory_limit for a launch's pass (``ROBOTOFF_BATCH_LAUNCH_MEMORY_LIMIT``,
    default 1GB: the launch process stays under 1.5 GiB, benchmarks/launch_benchmark.py)."""
    return os.environ.get("ROBOTOFF_BATCH_LAUNCH_MEMORY_LIMIT", "").strip() or "1GB"


def lexicon_rule() -> bytes:
    """The source of the lexicon's rule: lexicon.py (which rows and words count, how) and the
    pass's choice of rows (selection.sql's ``lexicon_rows``: each barcode once)."""
    rows = dict(named_statements(spellcheck_sql()))["lexicon_rows"]
    return Path(inspect.getfile(build_lexicon)).read_bytes() + rows.encode()


def lexicon_cache_path(dump_path: str) -> Path:
    """Where the CPU engine's lexicon of a dump is cached: keyed by the dump's path, size and
    modification time, and the lexicon's rule (:func:`lexicon_rule`), so a new dump or a
    changed rule (such as issue 23's, from the ``ingredients`` JSON to the main texts)
    rebuilds it (in the launch's pass): a lexicon of another dump or rule is never used."""
    stat = Path(dump_path).stat()
    key = hashlib.sha256(
        f"{Path(dump_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|".encode() + lexicon_rule()
    ).hexdigest()[:16]
    return home_dir() / "cache" / f"lexicon-{key}.parquet"


def store_lexicon(cache: Path, lexicon: pa.Table) -> None:
    """Write a lexicon to its cache path atomically (a concurrent launch sees all or none)."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    pq.write_table(lexicon, tmp)
    os.replace(tmp, cache)


def cached_lexicon(dump_path: str) -> tuple[Path, bool]:
    """The CPU engine's lexicon of a dump, built once per dump file (outside a launch, which
    counts it in its own pass). Returns (path, whether it was cached)."""
    cache = lexicon_cache_path(dump_path)
    if cache.exists():
        return cache, True
    logger.info("building the lexicon of %s (once per dump file)", dump_path)
    started = time.monotonic()
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")  # carriage returns flood run logs
        lexicon = build_lexicon(con, dump_path)
    logger.info("lexicon: %d words in %.1f s", lexicon.num_rows, time.monotonic() - started)
    store_lexicon(cache, lexicon)
    return cache, False


class IngredientsSpellcheck(JobType[SpellcheckLaunch]):
    name = "ingredients-spellcheck"
    description = __doc__.splitlines()[0] if __doc__ else ""
    launch_config = SpellcheckLaunch
    required_columns = SPELLCHECK_REQUIRED_COLUMNS
    staged_files = (INPUT_FILE, FACTS_FILE, LEXICON_FILE)
    # Locally the image is played by its entrypoint with the offline CPU engine (the local
    # runner has no GPU): its job config says so (local_environment), and so does the argv.
    local_environment = {"SPELLCHECK_ENGINE": "lexicon-cpu"}
    local_command = (
        sys.executable,
        str(CONTAINERS_DIR / "ingredients-spellcheck" / "entrypoint.py"),
        "--engine",
        "lexicon-cpu",
    )
    import_spec = IMPORT_SPEC
    prediction_type = PREDICTION_TYPE
    facts_file = FACTS_FILE
    demo_params = {"limit": 300}

    def demo_lines(self, outcome: DemoOutcome) -> list[Any]:
        """A few corrections (the words that changed), then the summary line."""
        from robotoff_batch.job_types.base import changed_words

        lines: list[Any] = []
        if outcome.examples:
            table = Table(title="example corrections")
            for column in ("barcode", "lang", "original → correction"):
                table.add_column(column)
            for ex in outcome.examples:
                changes = changed_words(ex["original"], ex["correction"])
                table.add_row(ex["barcode"], ex.get("lang") or "", Text(changes))
            lines.append(table)
        return [*lines, demo_summary(outcome, made="corrections made")]

    def facts_at_import(self, *, dump_path: str, codes: pa.Array) -> Iterator[pa.RecordBatch]:
        return facts_at_import(dump_path=dump_path, codes=codes)

    def task_environment(
        self,
        job_config: JobConfig,
        *,
        staging_root_uri: str,
        exists: Callable[[str], bool] | None = None,
    ) -> dict[str, str]:
        """A vLLM job reads its pinned model's staged weights with the hub off; the CPU
        engine needs nothing more (the local runner's config runs it: it has no GPU)."""
        if engine_that_runs(job_config) != "vllm":
            return {}
        try:
            pinned = pinned_model_of(job_config)
        except WeightsError as exc:
            raise StagedFilesError(str(exc)) from None
        marker = pinned.marker_uri(staging_root_uri)
        if exists is not None and not exists(marker):
            raise StagedFilesError(
                f"the weights of {pinned.model}@{pinned.revision} are not staged ({marker} is "
                "missing): run `robotoff-batch stage-weights ingredients-spellcheck` once; "
                "nothing was submitted"
            )
        return {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            WEIGHTS_URI_ENV: pinned.uri(staging_root_uri),
        }

    def smoke_check_argv(self, job_config: JobConfig) -> list[str] | None:
        """The vLLM image's GPU check (containers/ingredients-spellcheck/spellcheck_job/
        gpu_check.py): what no test here can run."""
        if engine_that_runs(job_config) != "vllm":
            return None
        return ["python3", "-m", "spellcheck_job.gpu_check"]

    def staged_prerequisites(self, job_config: JobConfig) -> list[tuple[str, str]]:
        if engine_that_runs(job_config) != "vllm":
            return []
        fix = "robotoff-batch stage-weights ingredients-spellcheck"
        try:
            pinned = pinned_model_of(job_config)
        except WeightsError as exc:
            return [("", str(exc))]
        return [(f"{pinned.relative_path()}/{STAGED_MARKER}", fix)]

    def extract(
        self,
        dump: str,
        params: SpellcheckLaunch,
        job_config: JobConfig,
        out: Path,
        *,
        dump_schema: pa.Schema | None = None,
        progress: Callable[[str], None] | None = None,
        known: pa.Table | None = None,
    ) -> ExtractedInput:
        return extract(
            dump_path=dump,
            params=params,
            work_dir=out,
            job_config=job_config,
            dump_schema=dump_schema,
            progress=progress,
            known=known,
        )

    def known_set(
        self, params: SpellcheckLaunch, job_config: JobConfig, target: PredictionTarget
    ) -> tuple[ModelIdentity, pa.Table] | None:
        """With ``skip_unchanged``: the job's model identity (the container's own rule,
        identity.py) and the texts it already gave a verdict on (our records; Robotoff's
        spellcheck predictions too with the postgres target), read once."""
        if not params.skip_unchanged:
            return None
        identity = model_identity(job_config)
        table = target.known_texts(
            job_type=self.name, identity=identity, predictions_sql=KNOWN_PREDICTIONS_SQL
        )
        return identity, table


JOB_TYPE = IngredientsSpellcheck()

__all__ = ["JOB_TYPE", "IngredientsSpellcheck", "SpellcheckLaunch"]
