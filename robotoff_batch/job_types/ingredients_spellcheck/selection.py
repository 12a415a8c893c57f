"""The products ingredients-spellcheck corrects: Robotoff's selection, as a DuckDB query
(``selection.sql``) over the OFF Parquet dump, and the launch config that parameterises it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import dagster as dg
import pyarrow as pa
from pydantic import Field

from robotoff_batch import extraction

_SELECTION_SQL_PATH = Path(__file__).resolve().parent / "selection.sql"


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


def spellcheck_sql() -> str:
    """The ingredients-spellcheck selection query (``selection.sql``)."""
    return _SELECTION_SQL_PATH.read_text(encoding="utf-8")


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
