"""The whole import of two checkouts side by side: the same staged job, the same embedded
PostgreSQL, each import in its own process (import_benchmark.py's ``import`` worker of each
checkout, so each runs its own code), a fresh database each, the checkouts alternated round by
round so a change of the machine's load falls on both.

    git -C /work/main worktree add /tmp/baseline main      # or any checkout to compare with
    .venv/bin/python benchmarks/import_side_by_side.py --baseline /tmp/baseline \\
        --rows 1_000_000 --rounds 2

Writes ``benchmarks/results/import_side_by_side.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import import_benchmark as bench  # noqa: E402
from benchmarks.common import RESULTS_DIR, configure_logging, remove_work_dir  # noqa: E402


def run_import(root: Path, *, staging: Path, conninfo: str, job_id: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(root / "benchmarks" / "import_benchmark.py"),
        "--worker",
        "--mode",
        "import",
        "--staging",
        str(staging),
        "--conninfo",
        conninfo,
        "--job-id",
        job_id,
        "--files",
        "4",
        "--reimports",
        "1",
    ]
    # the checkout's own code first on the path (an editable install points elsewhere)
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=root, env=env)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout to compare with")
    parser.add_argument("--rows", type=lambda v: int(v.replace("_", "")), default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--changed-fraction", type=float, default=1.0)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    configure_logging()
    from robotoff_batch.predictions.embedded import ensure_embedded_postgres, with_database

    trees = {"baseline": args.baseline.resolve(), "this checkout": PROJECT_ROOT}
    work = Path(tempfile.mkdtemp(prefix="robotoff-batch-side-by-side-"))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    try:
        admin = with_database(ensure_embedded_postgres(work / "postgres"), "postgres")
        job_id = f"ingredients-spellcheck-20261202-000000-bench{args.rows}"
        paths = bench.write_outputs(
            work / "outputs",
            rows=args.rows,
            files=4,
            changed_fraction=args.changed_fraction,
            seed=42,
        )
        bench.stage_job(work / "staging", job_id, paths)
        for r in range(args.rounds):
            for i, (name, root) in enumerate(trees.items()):
                db = bench._fresh_database(admin, f"side_by_side_{r}_{i}")
                res = run_import(root, staging=work / "staging", conninfo=db, job_id=job_id)
                results[name].append(res)
                bench.logger.info("%s, round %d: %.2f s", name, r, res["seconds"])
    finally:
        remove_work_dir(work, work / "postgres", keep=False, log=bench.logger)
    load = os.getloadavg()
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / "import_side_by_side.json").write_text(
        json.dumps({"rows": args.rows, "load_avg": load, "results": results}, indent=1)
    )
    base = [x["seconds"] for x in results["baseline"]]
    this = [x["seconds"] for x in results["this checkout"]]
    lines = [
        "# The whole import, two checkouts side by side",
        "",
        f"{args.rows:,} output rows in 4 task files, changed fraction {args.changed_fraction}, "
        f"{args.rounds} round(s) alternated, baseline {args.baseline}; load average at the end "
        f"{load[0]:.1f} on {os.cpu_count()} CPUs (a loaded machine: compare the two columns, "
        "not the seconds with another run).",
        "",
        "| round | baseline s | this checkout s | ratio |",
        "|---:|---:|---:|---:|",
        *(
            f"| {i} | {b:.2f} | {t:.2f} | {t / b:.2f} |"
            for i, (b, t) in enumerate(zip(base, this, strict=True))
        ),
        f"| median | {statistics.median(base):.2f} | {statistics.median(this):.2f} "
        f"| {statistics.median(this) / statistics.median(base):.2f} |",
        "",
    ]
    (args.results_dir / "import_side_by_side.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
