"""ingredients-spellcheck: correct typos in the ingredient lists of products.

Selection (Robotoff's): the product's main ingredients text, non-empty, with a fraction of
ingredients unknown to the taxonomy in (min_fraction, max_fraction], most popular first.
The container writes one Parquet per task (code, lang, text, correction, engine...); rows whose
correction differs from the text become Robotoff predictions of type ``ingredient_spellcheck``
and, by Robotoff's importer rules, ``ingredient_spellcheck`` insights
(``ingredients_spellcheck_import.sql``, ``ingredients_spellcheck_insights.sql``), checked
against the product facts the extraction wrote beside the input (``products.parquet``).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from robotoff_batch import extraction
from robotoff_batch.config.models import JobConfig
from robotoff_batch.job_types.base import INPUT_FILE, ExtractedInput, JobType
from robotoff_batch.job_types.spellcheck_lexicon import build_lexicon
from robotoff_batch.paths import CONTAINERS_DIR, home_dir
from robotoff_batch.predictions.store import ImportSpec, named_statements

logger = logging.getLogger(__name__)

PREDICTION_TYPE = "ingredient_spellcheck"
OUTPUT_COLUMNS = ("code", "lang", "text", "correction", "engine", "engine_version")
FACTS_FILE = "products.parquet"
_HERE = Path(__file__).resolve().parent
IMPORT_SQL_PATH = _HERE / "ingredients_spellcheck_import.sql"
INSIGHTS_SQL_PATH = _HERE / "ingredients_spellcheck_insights.sql"
FACTS_SQL_PATH = _HERE / "ingredients_spellcheck_facts.sql"
SELECTION_SQL_PATH = _HERE / "ingredients_spellcheck.sql"
FACTS_SCHEMA = pa.schema(
    [
        pa.field("code", pa.string()),
        pa.field("lang", pa.string()),
        pa.field("ingredients_text_lang", pa.string()),
        pa.field("countries", pa.string()),  # JSON array of countries_tags
        pa.field("brands", pa.string()),  # JSON array of brands_tags
        pa.field("unique_scans_n", pa.int64()),
    ]
)


# Columns of the OFF dump read by ingredients_spellcheck.sql, with their expected type family.
# Present in both the current (111 columns) and the older (110 columns) dump schemas.
SPELLCHECK_REQUIRED_COLUMNS: Mapping[str, str] = {
    "code": "string",
    "lang": "string",
    "ingredients_text": extraction.LANGUAGE_FIELD,
    "product_name": extraction.LANGUAGE_FIELD,
    "popularity_key": "integer",
    "ingredients_n": "integer",
    "unknown_ingredients_n": "integer",
    "countries_tags": "list<string>",
}

# Input Parquet of ingredients-spellcheck (docs/CONTRACTS.md).
SPELLCHECK_INPUT_SCHEMA = pa.schema(
    [
        pa.field("code", pa.string(), nullable=False),
        pa.field("lang", pa.string()),
        pa.field("text", pa.string()),
        pa.field("product_name", pa.string()),
        pa.field("popularity_key", pa.int64()),
        pa.field("fraction", pa.float64()),
    ]
)


def spellcheck_sql() -> str:
    """The ingredients-spellcheck selection query (``job_types/ingredients_spellcheck.sql``)."""
    return SELECTION_SQL_PATH.read_text(encoding="utf-8")


def _str_list(name: str, values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise extraction.ExtractionError(
            f"{name} must be a list of strings, not the string {values!r}"
        )
    out = [str(v) for v in values]
    return out or None


def extract_spellcheck_products(
    *,
    dump_path: str,
    output_path: Path,
    limit: int,
    min_fraction: float,
    max_fraction: float,
    languages: Sequence[str] | None = None,
    countries: Sequence[str] | None = None,
    min_popularity: int | None = None,
    codes: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    memory_limit: str = extraction.DEFAULT_MEMORY_LIMIT,
    threads: int | None = None,
) -> extraction.ExtractionResult:
    """Select the products to spellcheck and write the job's input Parquet.

    Robotoff's selection: the product's main ingredients text, non-empty after trimming, with
    a fraction of unknown ingredients in (``min_fraction``, ``max_fraction``] (exclusive min,
    inclusive max), most popular first (ties by code), at most ``limit`` rows. Optional filters:
    product ``lang`` in ``languages``, any of ``countries_tags`` in ``countries``,
    ``popularity_key >= min_popularity``, ``code`` in ``codes`` (None or empty: no filter).

    Checks the dump's columns first. Output schema: :data:`SPELLCHECK_INPUT_SCHEMA`. A
    selection matching nothing gives a 0-row file, not an error.
    """
    if limit < 1:
        raise extraction.ExtractionError(f"limit must be at least 1, got {limit}")
    if not 0.0 <= min_fraction < max_fraction:
        raise extraction.ExtractionError(
            f"need 0 <= min_fraction < max_fraction, got {min_fraction} and {max_fraction}"
        )
    extraction.check_dump(dump_path=dump_path, required_columns=SPELLCHECK_REQUIRED_COLUMNS)
    params: dict[str, object] = {
        "dump_path": dump_path,
        "limit": int(limit),
        "min_fraction": float(min_fraction),
        "max_fraction": float(max_fraction),
        "languages": _str_list("languages", languages),
        "countries": _str_list("countries", countries),
        "min_popularity": None if min_popularity is None else int(min_popularity),
        "codes": _str_list("codes", codes),
    }
    return extraction.extract_to_parquet(
        dump_path=dump_path,
        sql=spellcheck_sql(),
        params=params,
        output_path=output_path,
        progress=progress,
        memory_limit=memory_limit,
        threads=threads,
        schema=SPELLCHECK_INPUT_SCHEMA,
    )


class SpellcheckLaunch(dg.Config):
    """What to correct in one launch (the selection of products)."""

    limit: int = Field(
        default=10_000,
        ge=1,
        le=5_000_000,
        strict=True,  # `limit=true` is a mistake, not 1
        description="Most popular N products selected.",
    )
    min_fraction: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        strict=True,  # `min_fraction=true` is a mistake, not 1.0 (an int such as 0 is fine)
        description="Keep products whose fraction of unknown ingredients is above this.",
    )
    max_fraction: float = Field(
        default=0.4,
        ge=0.0,
        le=1.0,
        strict=True,
        description="... and at most this (Robotoff: 0.4; above, the text is often not a list "
        "of ingredients at all).",
    )
    languages: list[str] = Field(
        default_factory=list,
        description="Product languages to keep (e.g. ['fr', 'en']); empty for all.",
    )
    countries: list[str] = Field(
        default_factory=list,
        description="countries_tags to keep (e.g. ['en:france']); empty for all.",
    )
    min_popularity: int | None = Field(
        default=None, strict=True, description="Minimum popularity_key; null for no minimum."
    )
    codes: list[str] = Field(
        default_factory=list, description="Only these barcodes (re-run a known set); empty for all."
    )


def engine_that_runs(job_config: JobConfig, local_argv: Sequence[str] | None) -> str:
    """The correction engine the container will run, by the container's own rule: an
    ``--engine`` argument, else ``SPELLCHECK_ENGINE``, else lexicon-cpu."""
    argv = [*(local_argv or ()), *job_config.resources.commands]
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
    local_argv: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ExtractedInput:
    """Select the products; with the CPU engine, add its lexicon built from the same dump
    (vLLM never reads it, so a GPU job does not pay the lexicon's build or upload)."""
    if params.min_fraction >= params.max_fraction:
        raise extraction.ExtractionError(
            f"min_fraction {params.min_fraction} must be below max_fraction {params.max_fraction}"
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    input_path = work_dir / INPUT_FILE
    result = extract_spellcheck_products(
        dump_path=dump_path,
        output_path=input_path,
        limit=params.limit,
        min_fraction=params.min_fraction,
        max_fraction=params.max_fraction,
        languages=params.languages or None,
        countries=params.countries or None,
        min_popularity=params.min_popularity,
        codes=params.codes or None,
        progress=progress,
    )
    files = {INPUT_FILE: input_path}
    if result.rows:
        facts_path = work_dir / FACTS_FILE
        extract_facts(dump_path=dump_path, input_path=input_path, output_path=facts_path)
        files[FACTS_FILE] = facts_path
    engine = engine_that_runs(job_config, local_argv)
    metadata: dict[str, object] = {
        "extraction_s": round(result.duration_s, 3),
        "spellcheck_engine": engine,
    }
    if result.rows and engine == "lexicon-cpu":
        lexicon_path = work_dir / LEXICON_FILE
        cached, hit = cached_lexicon(dump_path)
        shutil.copyfile(cached, lexicon_path)
        files[LEXICON_FILE] = lexicon_path
        metadata["lexicon_words"] = pq.read_metadata(lexicon_path).num_rows
        metadata["lexicon_cache"] = "hit" if hit else "built"
    return ExtractedInput(rows=result.rows, files=files, metadata=metadata)


def cached_lexicon(dump_path: str) -> tuple[Path, bool]:
    """The CPU engine's lexicon of a dump, built once per dump file (it scans every product's
    ingredients: ~38 s on a 1M-product dump, against ~1 s for the selection itself).

    The cache key is the dump's path, size and modification time, and the builder's source, so
    a new dump or a changed builder rebuilds it. Returns (path, whether it was cached).
    """
    stat = Path(dump_path).stat()
    builder = Path(inspect.getfile(build_lexicon)).read_bytes()
    key = hashlib.sha256(
        f"{Path(dump_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|".encode() + builder
    ).hexdigest()[:16]
    cache = home_dir() / "cache" / f"lexicon-{key}.parquet"
    if cache.exists():
        return cache, True
    cache.parent.mkdir(parents=True, exist_ok=True)
    logger.info("building the lexicon of %s (once per dump file)", dump_path)
    started = time.monotonic()
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")  # carriage returns flood run logs
        lexicon = build_lexicon(con, dump_path)
    logger.info("lexicon: %d words in %.1f s", lexicon.num_rows, time.monotonic() - started)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    pq.write_table(lexicon, tmp)
    os.replace(tmp, cache)  # atomic: a concurrent launch sees the whole file or none
    return cache, False


def extract_facts(*, dump_path: str, input_path: Path, output_path: Path) -> int:
    """Write the facts of the input's products that the insight rules read (lang, the
    ingredients text in that lang, countries, brands, unique scans) from the same dump."""
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        present = {
            row[0]
            for row in con.execute(
                "SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet($p))",
                {"p": dump_path},
            ).fetchall()
        }
        fragments = {
            "brands": (
                "CAST(to_json(coalesce(p.brands_tags, CAST([] AS VARCHAR[]))) AS VARCHAR)"
                if "brands_tags" in present
                else "CAST('[]' AS VARCHAR)"
            ),
            "unique_scans_n": (
                "CAST(p.unique_scans_n AS BIGINT)"
                if "unique_scans_n" in present
                else "CAST(NULL AS BIGINT)"
            ),
        }
        query = FACTS_SQL_PATH.read_text(encoding="utf-8").format(**fragments)
        table = con.sql(
            query, params={"dump_path": dump_path, "input_path": str(input_path)}
        ).to_arrow_table()
    table = table.cast(FACTS_SCHEMA)
    pq.write_table(table, output_path, row_group_size=16_384)  # the import reads one at a time
    return table.num_rows


def _statement(path: Path, name: str) -> str:
    return dict(named_statements(path.read_text(encoding="utf-8")))[name]


IMPORT_SPEC = ImportSpec(
    output_schema=pa.schema(
        [
            pa.field("code", pa.string()),
            pa.field("lang", pa.string()),
            pa.field("text", pa.string()),
            pa.field("correction", pa.string()),
            pa.field("engine", pa.string()),
            pa.field("engine_version", pa.string()),
        ]
    ),
    not_null=("code",),
    unique=("code",),
    key_column="code",
    predictions_sql=_statement(IMPORT_SQL_PATH, "predictions"),
    facts_schema=FACTS_SCHEMA,
    insights_sql=INSIGHTS_SQL_PATH.read_text(encoding="utf-8"),
    one_prediction_per_product=True,
    handover_sql=_statement(IMPORT_SQL_PATH, "handover"),
)


LEXICON_FILE = "lexicon.parquet"


class IngredientsSpellcheck(JobType[SpellcheckLaunch]):
    name = "ingredients-spellcheck"
    description = __doc__.splitlines()[0] if __doc__ else ""
    launch_config = SpellcheckLaunch
    required_columns = SPELLCHECK_REQUIRED_COLUMNS
    staged_files = (INPUT_FILE, FACTS_FILE, LEXICON_FILE)
    # Locally the image is played by its entrypoint with the offline CPU engine; arguments
    # override the config's SPELLCHECK_ENGINE=vllm.
    local_command = (
        sys.executable,
        str(CONTAINERS_DIR / "ingredients-spellcheck" / "entrypoint.py"),
        "--engine",
        "lexicon-cpu",
    )
    import_spec = IMPORT_SPEC
    prediction_type = PREDICTION_TYPE
    facts_file = FACTS_FILE

    def extract(
        self,
        dump: str,
        params: SpellcheckLaunch,
        job_config: JobConfig,
        out: Path,
        *,
        local_argv: Sequence[str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> ExtractedInput:
        return extract(
            dump_path=dump,
            params=params,
            work_dir=out,
            job_config=job_config,
            local_argv=local_argv,
            progress=progress,
        )


JOB_TYPE = IngredientsSpellcheck()

__all__ = ["JOB_TYPE", "IngredientsSpellcheck", "SpellcheckLaunch"]
