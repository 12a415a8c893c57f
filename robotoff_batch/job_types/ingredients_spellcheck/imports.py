"""What ingredients-spellcheck imports: the product facts the insight rules read (staged
beside the input as ``products.parquet``, ``facts.sql``), and the import spec turning the
container's output into Robotoff predictions (``import.sql``) and insights (``insights.sql``)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from robotoff_batch.extraction import PG_TEXT_MACROS, conform
from robotoff_batch.predictions.model import ImportSpec, named_statements
from robotoff_batch.predictions.output import DUMP_MODIFIED_KEY, dump_modified

PREDICTION_TYPE = "ingredient_spellcheck"
OUTPUT_COLUMNS = ("code", "lang", "text", "correction", "engine", "engine_version")
FACTS_FILE = "products.parquet"
_HERE = Path(__file__).resolve().parent
IMPORT_SQL_PATH = _HERE / "import.sql"
INSIGHTS_SQL_PATH = _HERE / "insights.sql"
_FACTS_SQL_PATH = _HERE / "facts.sql"
KNOWN_SQL_PATH = _HERE / "known.sql"


def _statement(path: Path, name: str) -> str:
    return dict(named_statements(path.read_text(encoding="utf-8")))[name]


#: DuckDB: ``CREATE TEMP MACRO plain_ingredients_text(texts, language)``, the plain (not
#: allergen-marked) ingredients text of a language from the dump's ``ingredients_text`` list;
#: the one rule for ``ingredients_text_lang`` (facts.sql), reusable by any DuckDB connection.
PLAIN_TEXT_MACRO_SQL = _statement(_FACTS_SQL_PATH, "plain_text_macro")
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


#: The facts as the import reads them: the staged file's, plus whether the product is gone
#: from the dump read at import (a launch-time file has no such column: null, not deleted).
IMPORT_FACTS_SCHEMA = FACTS_SCHEMA.append(pa.field("deleted", pa.bool_()))


def fact_columns_sql(
    present: Collection[str],
    *,
    ingredients_text_lang: str = "plain_ingredients_text(p.ingredients_text, p.lang)",
) -> str:
    """facts.sql's ``fact_columns`` (the facts of a row ``p``) for a dump with the columns
    ``present`` (NULL for those it lacks). ``ingredients_text_lang``: the raw plain text of the
    row (default: computed from the dump row; the launch's pass gives the one its selection
    computed with the same macro)."""
    fragments = {
        "ingredients_text_lang": ingredients_text_lang,
        "brands": (
            "CAST(to_json(list_transform(coalesce(p.brands_tags, CAST([] AS VARCHAR[])),"
            " lambda t: pg_text(t))) AS VARCHAR)"
            if "brands_tags" in present
            else "CAST('[]' AS VARCHAR)"
        ),
        "unique_scans_n": (
            "CAST(p.unique_scans_n AS BIGINT)"
            if "unique_scans_n" in present
            else "CAST(NULL AS BIGINT)"
        ),
    }
    return _statement(_FACTS_SQL_PATH, "fact_columns").format(**fragments)


def _facts_query(con: duckdb.DuckDBPyConnection, dump_path: str, name: str) -> str:
    """facts.sql's statement ``name`` for this dump's columns (NULL for those it lacks)."""
    present = {
        row[0]
        for row in con.execute(
            "SELECT column_name FROM (DESCRIBE SELECT * FROM read_parquet($p))",
            {"p": dump_path},
        ).fetchall()
    }
    recency = "p.last_modified_t" if "last_modified_t" in present else "CAST(NULL AS BIGINT)"
    con.execute("SET enable_progress_bar = false")
    for macro in PG_TEXT_MACROS:  # pg_text: the one NUL rule of every staged text
        con.execute(macro)
    con.execute(PLAIN_TEXT_MACRO_SQL)
    return _statement(_FACTS_SQL_PATH, name).format(
        fact_columns=fact_columns_sql(present),
        copy_number=_statement(_FACTS_SQL_PATH, "copy_number").format(recency=recency),
    )


def write_facts(table: pa.Table, *, dump_path: str, output_path: Path) -> int:
    """Write the facts ``table`` (facts.sql's columns) as :data:`FACTS_SCHEMA`, with the
    modification time of the dump they were read from in the file's metadata."""
    table = conform(table, FACTS_SCHEMA)
    modified = dump_modified(dump_path)
    if modified is not None:
        table = table.replace_schema_metadata({DUMP_MODIFIED_KEY: modified.isoformat()})
    pq.write_table(table, output_path, row_group_size=16_384)  # the import reads one at a time
    return table.num_rows


def extract_facts(*, dump_path: str, input_path: Path, output_path: Path) -> int:
    """Write the facts of the input's products that the insight rules read (lang, the
    plain ingredients text in that lang, countries, brands, unique scans) from the same dump;
    the dump's modification time goes into the file's metadata. (A launch writes them from its
    own pass, selection.py: the same columns, compared in tests/test_launch_pass.py.)"""
    with duckdb.connect() as con:
        query = _facts_query(con, dump_path, "facts")
        table = con.sql(
            query, params={"dump_path": dump_path, "input_path": str(input_path)}
        ).to_arrow_table()
    return write_facts(table, dump_path=dump_path, output_path=output_path)


def facts_at_import(
    *, dump_path: str, codes: pa.Array, batch_rows: int = 4_096
) -> Iterator[pa.RecordBatch]:
    """The facts of the job's products (``codes``) in the dump at ``dump_path``, one DuckDB
    pass, streamed in batches of :data:`IMPORT_FACTS_SCHEMA`; a code the dump no longer holds
    comes back with ``deleted`` true."""
    with duckdb.connect() as con:
        query = _facts_query(con, dump_path, "facts_at_import")
        job_codes = pa.table({"code": codes.cast(pa.string())})
        con.register("job_codes", job_codes)
        reader = con.sql(query, params={"dump_path": dump_path}).to_arrow_reader(batch_rows)
        for batch in reader:
            yield batch.cast(IMPORT_FACTS_SCHEMA)


IMPORT_SPEC = ImportSpec(
    output_schema=pa.schema(
        [
            pa.field("code", pa.string()),
            pa.field("lang", pa.string()),
            pa.field("text", pa.string()),
            pa.field("correction", pa.string()),
            pa.field("engine", pa.string()),
            pa.field("engine_version", pa.string()),
            # lexicon-cpu 3+: the text's corrections with rule and confidence (JSON), put in
            # the prediction's data["corrections"] (Robotoff reads only data["original"] and
            # data["correction"]: robotoff/insights/importer.py:1460-1467, annotate.py:751)
            pa.field("corrections", pa.string()),
        ]
    ),
    optional=("corrections",),
    json_columns=("corrections",),
    not_null=("code",),
    unique=("code",),
    key_column="code",
    predictions_sql=_statement(IMPORT_SQL_PATH, "predictions"),
    scope_sql=_statement(IMPORT_SQL_PATH, "scope"),
    facts_schema=IMPORT_FACTS_SCHEMA,
    insights_sql=INSIGHTS_SQL_PATH.read_text(encoding="utf-8"),
    one_prediction_per_product=True,
    handover_sql=_statement(IMPORT_SQL_PATH, "handover"),
    known_sql=_statement(KNOWN_SQL_PATH, "known"),
    # import.sql's data: jsonb_build_object(...) || CASE ... END, never NULL
    data_never_null=True,
)
#: Robotoff's stored predictions of a model identity (the postgres target's known set).
KNOWN_PREDICTIONS_SQL = _statement(KNOWN_SQL_PATH, "known_predictions")
