"""Write an Open Food Facts-schema Parquet dump of any size, seeded from real sample rows.

The real dump (``food.parquet``) has about 4 million products and weighs several GB; this
generator makes a stand-in of N rows with exactly the schema of the sample it is seeded from
(by default ``data/off/food_sample_2026.parquet``, 111 columns), for benchmarks.

Each output row is a real sample row (picked at random) with:

* a new unique ``code`` (13 digits starting with ``2``, the GS1 restricted-circulation prefix,
  so it never collides with a real barcode),
* a randomised ``popularity_key`` (70 % small values with many ties, 30 % large ones, like the
  real dump's mix of rarely and often scanned products),
* ``unknown_ingredients_n`` perturbed by -2..+2 (clipped to 0..``ingredients_n``),
* ``ingredients_text`` (all languages) sampled from another random sample row.

Deterministic for a given ``--seed``, sample and ``--row-group-size``. Rows are generated and
written one row group at a time, so memory stays bounded (about 12 KB per row of a row group,
uncompressed, for the 2026 sample) whatever N is. Progress goes to stderr.

Data: Open Food Facts contributors, ODbL 1.0 (the generated rows are derived from it).

    .venv/bin/python benchmarks/generate_dump.py 1000000 /tmp/food_1m.parquet --seed 42
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

logger = logging.getLogger("generate_dump")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAMPLE = PROJECT_ROOT / "data" / "off" / "food_sample_2026.parquet"
DEFAULT_ROW_GROUP_SIZE = 32_768
CODE_PREFIX = 2_000_000_000_000  # 13-digit codes 2xxxxxxxxxxxx
MAX_POPULARITY = 25_000_000_000


def _replace(table: pa.Table, name: str, column: pa.Array | pa.ChunkedArray) -> pa.Table:
    idx = table.schema.get_field_index(name)
    if idx < 0:
        return table
    field = table.schema.field(idx)
    return table.set_column(idx, field, column.cast(field.type))


def make_chunk(sample: pa.Table, rng: np.random.Generator, start: int, size: int) -> pa.Table:
    """Rows ``start`` .. ``start + size - 1`` of the generated dump (schema of ``sample``)."""
    picks = rng.integers(0, sample.num_rows, size=size)
    chunk = sample.take(pa.array(picks))

    codes = np.arange(CODE_PREFIX + start, CODE_PREFIX + start + size, dtype=np.int64)
    chunk = _replace(chunk, "code", pc.cast(pa.array(codes), pa.string()))

    popular = rng.random(size) < 0.3
    popularity = np.where(
        popular,
        rng.integers(1_000, MAX_POPULARITY, size=size),
        rng.integers(0, 10, size=size),
    )
    chunk = _replace(chunk, "popularity_key", pa.array(popularity, pa.int64()))

    if "unknown_ingredients_n" in chunk.column_names and "ingredients_n" in chunk.column_names:
        unknown = chunk.column("unknown_ingredients_n").combine_chunks()
        total = chunk.column("ingredients_n").combine_chunks()
        noise = rng.integers(-2, 3, size=size)
        unknown_np = unknown.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        total_np = total.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        perturbed = np.clip(unknown_np + noise, 0, np.maximum(total_np, 0))
        mask = unknown.is_null().to_numpy(zero_copy_only=False)
        chunk = _replace(chunk, "unknown_ingredients_n", pa.array(perturbed, pa.int32(), mask=mask))

    if "ingredients_text" in chunk.column_names:
        text_picks = pa.array(rng.integers(0, sample.num_rows, size=size))
        chunk = _replace(
            chunk, "ingredients_text", sample.column("ingredients_text").take(text_picks)
        )
    return chunk


def generate(
    *,
    rows: int,
    output: Path,
    seed: int = 0,
    sample_path: Path = DEFAULT_SAMPLE,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    compression: str = "snappy",
) -> Path:
    """Write ``rows`` generated products to ``output`` (atomically: temp file then rename)."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    sample = pq.read_table(sample_path)
    rng = np.random.default_rng(seed)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    started = time.monotonic()
    written = 0
    try:
        with pq.ParquetWriter(tmp, sample.schema, compression=compression) as writer:
            while written < rows:
                size = min(row_group_size, rows - written)
                chunk = make_chunk(sample, rng, written, size)
                writer.write_table(chunk, row_group_size=size)
                written += size
                elapsed = time.monotonic() - started
                logger.info(
                    "%d/%d rows (%.0f%%), %.1fs, %.0f rows/s",
                    written,
                    rows,
                    100.0 * written / rows,
                    elapsed,
                    written / elapsed if elapsed else 0.0,
                )
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info(
        "wrote %s: %d rows, %d bytes in %.1fs",
        output,
        rows,
        output.stat().st_size,
        time.monotonic() - started,
    )
    return output


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=lambda s: int(s.replace("_", "")), help="e.g. 1_000_000")
    parser.add_argument("output", type=Path, help="Parquet file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE, help="real rows to use")
    parser.add_argument("--row-group-size", type=int, default=DEFAULT_ROW_GROUP_SIZE)
    parser.add_argument("--compression", default="snappy", help="as the OFF exporter: snappy")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    generate(
        rows=args.rows,
        output=args.output,
        seed=args.seed,
        sample_path=args.sample,
        row_group_size=args.row_group_size,
        compression=args.compression,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
