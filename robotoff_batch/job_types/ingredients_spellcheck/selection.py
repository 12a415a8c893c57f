"""The products ingredients-spellcheck corrects: Robotoff's selection, as a DuckDB query
(``selection.sql``) over the OFF Parquet dump, and the launch config that parameterises it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
from pydantic import Field, ValidationError, model_validator

from robotoff_batch import extraction
from robotoff_batch.job_types.ingredients_spellcheck.imports import (
    FACTS_FILE,
    PLAIN_TEXT_MACRO_SQL,
    fact_columns_sql,
    write_facts,
)
from robotoff_batch.job_types.ingredients_spellcheck.lexicon import (
    LEXICON_SCHEMA,
    lexicon_counts_sql,
    lexicon_lang_sql,
    lexicon_text_sql,
)
from robotoff_batch.predictions.model import named_statements

logger = logging.getLogger(__name__)

_SELECTION_SQL_PATH = Path(__file__).resolve().parent / "selection.sql"
_KNOWN_SQL_PATH = Path(__file__).resolve().parent / "known.sql"


# Columns of the OFF dump read by selection.sql, with their expected type family.
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


def _statements() -> dict[str, str]:
    return dict(named_statements(_SELECTION_SQL_PATH.read_text(encoding="utf-8")))


def spellcheck_sql() -> str:
    """The ingredients-spellcheck selection (``selection.sql``), all its statements."""
    return _SELECTION_SQL_PATH.read_text(encoding="utf-8")


def _str_list(values: Sequence[str] | None) -> list[str] | None:
    """A list filter as DuckDB binds it: None (or empty) for no filter."""
    return [str(v) for v in values] if values else None


# The dump's columns the product facts are computed from, carried by the pass (as f_<name>)
# from the selected rows to facts.sql's columns (`facts`), beside code and lang; the optional
# ones only when the dump has them (an older or test dump may lack them). The facts read one
# language's ingredients text (the first plain entry of the product's `lang`), so the pass
# carries that one string (facts.sql's macro, computed on the raw row: a `lang` holding a NUL
# matches no entry, as at import), not the list: carrying every language's list through the
# sort of the candidate rows cost ~0.5x the bare selection's time and ~450 MiB, the language's
# list ~0.27 s of CPU more than its one text (benchmarks/launch_benchmark.py).
FACTS_COLUMNS = ("ingredients_text_lang", "countries_tags")
OPTIONAL_FACTS_COLUMNS = ("brands_tags", "unique_scans_n")
_CARRIED = {"ingredients_text_lang": "plain_ingredients_text(p.ingredients_text, p.lang)"}


@dataclass(frozen=True)
class LaunchPass:
    """What the launch's one pass over the dump wrote and counted."""

    rows: int  # products selected (rows of the input file)
    input_path: Path
    facts_path: Path | None  # the selected products' facts (products.parquet), when asked
    lexicon: pa.Table | None  # the CPU engine's lexicon counts, when asked
    duration_s: float
    counts: Mapping[str, int]  # dump_rows, invalid_code_rows, stale_rows, ... (stats)
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds per statement

    def metadata(self) -> dict[str, int]:
        """The counts a launch records (and a person checks): what the pass dropped or
        cleaned so that nothing staged is refused by the import."""
        keys = (
            "dump_rows",
            "duplicated_barcodes",
            "stale_rows",
            "invalid_code_rows",
            "nul_cleaned",
        )
        return {f"dump_{k}" if not k.startswith("dump") else k: self.counts[k] for k in keys}


def _carried(column: str) -> str:
    return f"{_CARRIED.get(column, f'p.{column}')} AS f_{column}"


def _fragments(present: set[str], lexicon: bool) -> dict[str, str]:
    optional = [c for c in OPTIONAL_FACTS_COLUMNS if c in present]
    facts = [*FACTS_COLUMNS, *optional]
    nul = []
    for c in facts:
        if c == "ingredients_text_lang":
            nul.append(f"has_nul(f_{c})")
        elif c in ("countries_tags", "brands_tags"):
            nul.append(f"list_bool_or(list_transform(f_{c}, lambda t: has_nul(t)))")
    return {
        "last_modified_t": (
            "CAST(p.last_modified_t AS BIGINT)"
            if "last_modified_t" in present
            else "CAST(NULL AS BIGINT)"
        ),
        "facts_columns": ", ".join(_carried(c) for c in facts),
        # facts.sql's columns of a selected row, read from what the selection carried (`lang`:
        # already cleaned; pg_text again is a no-op)
        "facts_source": ", ".join(["code", "lang", *(f"f_{c} AS {c}" for c in facts)]),
        "fact_columns": fact_columns_sql(present, ingredients_text_lang="p.ingredients_text_lang"),
        "facts_nul": " OR ".join(f"coalesce({n}, false)" for n in nul) or "false",
        "lexicon_scan": (
            f"{lexicon_lang_sql('p')} AS lexicon_lang, {lexicon_text_sql('p')} AS lexicon_text"
            if lexicon
            else "CAST(NULL AS VARCHAR) AS lexicon_lang"
        ),
        "lexicon_select": (
            "lexicon_lang, lexicon_text"
            if lexicon
            else "lexicon_lang, CAST(NULL AS VARCHAR) AS lexicon_text"
        ),
    }


def launch_pass(
    *,
    dump_path: str,
    work_dir: Path,
    limit: int,
    min_fraction: float,
    max_fraction: float,
    languages: Sequence[str] | None = None,
    countries: Sequence[str] | None = None,
    min_popularity: int | None = None,
    codes: Sequence[str] | None = None,
    facts: bool = True,
    lexicon: bool = False,
    lexicon_min_length: int = 2,
    progress: Callable[[str], None] | None = None,
    memory_limit: str = extraction.DEFAULT_MEMORY_LIMIT,
    threads: int | None = None,
    input_name: str = "input.parquet",
    dump_schema: pa.Schema | None = None,
    known: pa.Table | None = None,
) -> LaunchPass:
    """Read the dump ONCE and write what a launch stages: the selected products (the input
    file, :data:`SPELLCHECK_INPUT_SCHEMA`), their facts (``facts=True``: products.parquet,
    facts.sql's columns, as ``extract_facts`` reads them from the dump; not written for an
    empty selection) and, with ``lexicon=True``, the CPU engine's lexicon counts (lexicon.py's
    rule, same result as ``build_lexicon`` on the dump, stale copies out).

    Robotoff's selection: the product's main ingredients text, non-empty after trimming, with
    a fraction of unknown ingredients in (``min_fraction``, ``max_fraction``] (exclusive min,
    inclusive max), most popular first (ties by code), at most ``limit`` rows. Optional filters:
    product ``lang`` in ``languages``, any of ``countries_tags`` in ``countries``,
    ``popularity_key >= min_popularity``, ``code`` in ``codes`` (None or empty: no filter).
    One row per barcode and no NUL character staged: see selection.sql, whose counts are in
    :attr:`LaunchPass.counts`. DuckDB's ``memory_limit`` bounds the whole pass (it spills to
    a temporary directory in ``work_dir`` beyond it).

    ``known`` (skip_unchanged, issue 22): the (code, lang, text_hash) the job's model already
    gave a verdict on (predictions/known.py); those products are left out before the top N
    (known.sql), counted in ``counts["skipped_unchanged"]``.

    The arguments are a :class:`SpellcheckLaunch`'s, validated there (the one check of a
    launch's parameters). Checks the dump's columns first, on ``dump_schema`` (its footer, as
    the launch read it once) or the footer read here. A selection matching nothing gives a
    0-row input file.
    """
    required = dict(SPELLCHECK_REQUIRED_COLUMNS)  # the lexicon's columns among them
    if dump_schema is None:  # the footer, read here unless the launch already did
        dump_schema = extraction.read_dump_schema(dump_path)
    extraction.check_columns(dump_schema, dump_path=dump_path, required_columns=required)
    present = set(dump_schema.names)
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    statements = _statements()
    fragments = _fragments(present, lexicon)
    known_statements = dict(named_statements(_KNOWN_SQL_PATH.read_text(encoding="utf-8")))
    fragments["unchanged_filter"] = (
        known_statements["unchanged_filter"] if known is not None else "true"
    )
    fragments["candidate_rows"] = statements["candidate_rows"]
    scan = statements["scan"].format(**fragments)
    params: dict[str, object] = {
        "dump_path": dump_path,
        "min_fraction": float(min_fraction),
        "max_fraction": float(max_fraction),
        "languages": _str_list(languages),
        "countries": _str_list(countries),
        "min_popularity": None if min_popularity is None else int(min_popularity),
        "codes": _str_list(codes),
    }
    input_path = work_dir / input_name
    facts_path: Path | None = None
    table: pa.Table | None = None
    timings: dict[str, float] = {}
    mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[name] = round(now - mark, 3)
        mark = now

    try:
        with extraction.connect(
            memory_limit=memory_limit,
            threads=threads,
            spill_parent=work_dir,
            progress=progress,
            label=f"one pass over {dump_path}" + (" (with the lexicon)" if lexicon else ""),
        ) as con:
            if known is not None:  # the known set, from Arrow (registered before any result)
                con.register("launch_known_arrow", known)
                con.execute("CREATE TEMP TABLE launch_known AS SELECT * FROM launch_known_arrow")
                con.unregister("launch_known_arrow")
            con.execute(PLAIN_TEXT_MACRO_SQL)
            con.execute(statements["text_macro"])
            lap("connect")
            con.execute(statements["keys"].format(scan=scan, **fragments), {"dump_path": dump_path})
            lap("keys")
            con.execute(statements["excluded"])
            row = con.execute("SELECT count(*) FROM launch_excluded").fetchone()
            excluded = int(row[0]) if row else 0
            skipped = 0
            if known is not None:  # issue 22: the rows whose text this model already saw
                con.execute(known_statements["unchanged"].format(**fragments), params)
                row = con.execute(
                    "SELECT count(*) FROM launch_unchanged "
                    "WHERE dump_row NOT IN (SELECT dump_row FROM launch_excluded)"
                ).fetchone()
                skipped = int(row[0]) if row else 0
            lap("excluded")
            con.execute(
                statements["selected"].format(top_n=int(limit) + excluded, **fragments),
                {**params, "limit": int(limit)},
            )
            lap("selected")
            rows = extraction.write_parquet(
                con.sql(statements["input"]), input_path, schema=SPELLCHECK_INPUT_SCHEMA
            )
            lap("input")
            if facts and rows:
                facts_path = work_dir / FACTS_FILE
                write_facts(
                    con.sql(statements["facts"].format(**fragments)).to_arrow_table(),
                    dump_path=dump_path,
                    output_path=facts_path,
                )
                lap("facts")
            if lexicon:
                counts_sql = lexicon_counts_sql(
                    statements["lexicon_rows"], min_length=lexicon_min_length
                )
                table = con.sql(counts_sql).to_arrow_table().cast(LEXICON_SCHEMA)
                lap("lexicon_counts")
            cursor = con.execute(statements["stats"].format(**fragments))
            names = [d[0] for d in cursor.description]
            counts = dict(zip(names, (int(v or 0) for v in cursor.fetchone() or ()), strict=True))
            if known is not None:
                counts["skipped_unchanged"] = skipped
            lap("stats")
    except duckdb.Error as exc:
        raise extraction.ExtractionError(f"extraction from {dump_path} failed: {exc}") from exc
    duration = time.monotonic() - started
    logger.info(
        "one pass over %s in %.2fs (%s): %d products selected; %s",
        dump_path,
        duration,
        ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()),
        rows,
        ", ".join(f"{k} {v}" for k, v in counts.items()),
    )
    if progress is not None:
        progress(f"done: {rows} products selected in {duration:.1f}s ({counts})")
    return LaunchPass(
        rows=rows,
        input_path=input_path,
        facts_path=facts_path,
        lexicon=table,
        duration_s=duration,
        counts=counts,
        timings=timings,
    )


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
    """Select the products to spellcheck and write the job's input Parquet only
    (:func:`launch_pass` without facts nor lexicon). Output schema:
    :data:`SPELLCHECK_INPUT_SCHEMA`. The arguments are validated by :class:`SpellcheckLaunch`
    (an invalid one raises :class:`~robotoff_batch.extraction.ExtractionError` naming it)."""
    launch_params(
        limit=limit,
        min_fraction=min_fraction,
        max_fraction=max_fraction,
        languages=languages,
        countries=countries,
        min_popularity=min_popularity,
        codes=codes,
    )
    done = launch_pass(
        dump_path=dump_path,
        work_dir=Path(output_path).parent,
        input_name=Path(output_path).name,
        limit=limit,
        min_fraction=min_fraction,
        max_fraction=max_fraction,
        languages=languages,
        countries=countries,
        min_popularity=min_popularity,
        codes=codes,
        facts=False,
        progress=progress,
        memory_limit=memory_limit,
        threads=threads,
    )
    return extraction.ExtractionResult(
        rows=done.rows,
        output_path=done.input_path,
        duration_s=done.duration_s,
        bytes=done.input_path.stat().st_size,
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
    skip_unchanged: bool = Field(
        default=False,
        strict=True,
        description="Leave out the products whose current text (in its language) this model "
        "(predictor and predictor_version) already gave a verdict on, in the target database "
        "or our records of earlier jobs; limit then counts the products that need work. "
        "False for a launch by hand; the schedule launches with true.",
    )

    @model_validator(mode="after")
    def _fractions_in_order(self) -> SpellcheckLaunch:
        if self.min_fraction >= self.max_fraction:
            raise ValueError(
                f"min_fraction {self.min_fraction} must be below max_fraction {self.max_fraction}"
            )
        return self


def launch_params(**values: object) -> SpellcheckLaunch:
    """A :class:`SpellcheckLaunch` from plain values (None: the default), its refusal an
    :class:`~robotoff_batch.extraction.ExtractionError` naming each field at fault."""
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return SpellcheckLaunch.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'launch parameters'}: {e['msg']}"
            for e in exc.errors()
        )
        raise extraction.ExtractionError(f"invalid launch parameters: {problems}") from None
