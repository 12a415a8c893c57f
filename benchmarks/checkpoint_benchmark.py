"""What checkpointing costs the CPU engine: one task over the sample dump's main texts, with
the whole shard as one chunk (as before checkpoints) and with smaller chunks; each in a fresh
subprocess of the real container; wall time, objects written, the load average beside.
Writes benchmarks/results/checkpoint.md (and .json).

    .venv/bin/python benchmarks/checkpoint_benchmark.py [--out DIR]

Data: Open Food Facts contributors, ODbL 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from robotoff_batch.job_types.ingredients_spellcheck.lexicon import build_lexicon  # noqa: E402
from robotoff_batch.paths import CONTAINERS_DIR, SAMPLE_DATA_DIR  # noqa: E402

SAMPLE = SAMPLE_DATA_DIR / "food_sample_2026.parquet"
ENTRYPOINT = CONTAINERS_DIR / "ingredients-spellcheck" / "entrypoint.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        con = duckdb.connect()
        table = con.sql(
            """
            SELECT code, lang, text FROM (
                SELECT code, lang,
                       list_filter(ingredients_text, lambda x: x.lang = 'main')[1].text AS text
                FROM read_parquet($path)
            ) WHERE text IS NOT NULL AND text <> '' ORDER BY code
            """,
            params={"path": str(SAMPLE)},
        ).to_arrow_table()
        pq.write_table(table, root / "input.parquet")
        pq.write_table(build_lexicon(con, str(SAMPLE)), root / "lexicon.parquet")
        rows = table.num_rows
        results = []
        for chunk_rows in (rows, 5000, 1024, 256):
            out = root / f"out-{chunk_rows}"
            env = {
                **os.environ,
                "INPUT_FILE_PATH": str(root / "input.parquet"),
                "OUTPUT_FILE_PATH": str(out),
                "LEXICON_FILE_PATH": str(root / "lexicon.parquet"),
                "CHUNK_ROWS": str(chunk_rows),
            }
            began = time.monotonic()
            done = subprocess.run(
                [sys.executable, str(ENTRYPOINT), "--engine", "lexicon-cpu"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            wall = time.monotonic() - began
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            manifest = json.loads((out / "task-00000" / "manifest.json").read_text())
            results.append(
                {
                    "chunk_rows": chunk_rows,
                    "chunks": len(manifest["chunks"]),
                    "wall_s": round(wall, 2),
                    "load_1m": round(os.getloadavg()[0], 2),
                }
            )
    base = results[0]["wall_s"]
    lines = [
        "# Checkpointing cost, CPU engine (benchmarks/checkpoint_benchmark.py)",
        "",
        f"One task, {rows} main texts of the sample dump, the real container in a fresh "
        "subprocess each (start-up and index building included).",
        "",
        "| chunk_rows | chunks written | wall s | vs one chunk | load (1 min) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['chunk_rows']} | {r['chunks']} | {r['wall_s']} | "
            f"{r['wall_s'] / base:.2f} | {r['load_1m']} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "checkpoint.md").write_text("\n".join(lines) + "\n")
    (args.out / "checkpoint.json").write_text(json.dumps({"rows": rows, "runs": results}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
