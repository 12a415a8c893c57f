"""Helpers shared by the benchmark scripts: memory figures, case subprocesses, the report.

Imports only the standard library at module level (``remove_work_dir`` imports the embedded
PostgreSQL helpers when called), so that a case's subprocess importing it stays small: its peak
RSS is what the benchmarks measure.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def configure_logging() -> None:
    """Log INFO and up to stderr with a timestamp and the logger's name (the scripts' CLI)."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )


def worker_output(stdout: str) -> dict[str, Any]:
    """The JSON object a case's worker subprocess printed as the last line of ``stdout``."""
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def run_worker(cmd: list[str]) -> dict[str, Any]:
    """Run a case's worker subprocess ``cmd`` (raising if it fails); return what it printed."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"case {cmd[2:]} exited {done.returncode}; its last output:\n{done.stderr[-4000:]}"
        )
    return worker_output(done.stdout)


def remove_work_dir(work: Path, data_dir: Path, *, keep: bool, log: logging.Logger) -> None:
    """Stop the embedded PostgreSQL of ``data_dir``, then remove ``work`` unless ``keep``."""
    from robotoff_batch.predictions.embedded import stop_embedded_postgres

    stop_embedded_postgres(data_dir)
    if keep:
        log.info("kept %s", work)
    else:
        shutil.rmtree(work, ignore_errors=True)


def mib(n: float) -> str:
    """``n`` bytes as mebibytes with one decimal, e.g. ``1,234.5 MiB``."""
    return f"{n / 2**20:,.1f} MiB"


def proc_status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field in bytes (VmHWM: peak RSS of this process image).

    Raises RuntimeError if the field is not there, OSError if the file cannot be read.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def max_rss_bytes() -> int:
    """Peak RSS of this process.

    On Linux, VmHWM (/proc/self/status) is this process image's own high-water mark, whereas
    ru_maxrss survives fork+exec and can report the parent's peak; ru_maxrss is the fallback
    where there is no VmHWM.
    """
    try:
        return proc_status_bytes("VmHWM")
    except (OSError, RuntimeError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


def environment(**extra: Any) -> dict[str, Any]:
    """The report's environment block: cpus, platform, python, then ``extra`` in its order."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **extra,
    }


def generated_line(report: dict[str, Any]) -> str:
    """The start of a report's markdown summary: when, and the environment's cpus, platform and
    Python, e.g. ``Generated 2026-01-01T00:00:00Z on 2 CPUs, Linux-…, Python 3.11.7``."""
    env = report["environment"]
    return (
        f"Generated {report['generated_at']} on {env['cpus']} CPUs, {env['platform']}, "
        f"Python {env['python']}"
    )


def markdown_report(title: str, paragraphs: list[str], table: list[str]) -> str:
    """A report's markdown: ``title``, each paragraph, then the ``table`` lines (header,
    alignment, rows), with a blank line after the title and each paragraph, ending in a
    newline."""
    lines = [title, ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    lines += table
    lines.append("")
    return "\n".join(lines)


def build_report(env: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """A report stamped now (UTC): ``generated_at``, ``environment`` and ``results``."""
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": env,
        "results": results,
    }


def write_report(
    report: dict[str, Any],
    results_dir: Path,
    name: str,
    to_markdown: Callable[[dict[str, Any]], str],
    *,
    ensure_ascii: bool = True,
    echo: bool = True,
) -> None:
    """Write ``<name>.json`` and ``<name>.md`` to ``results_dir`` (created if needed).

    The markdown is ``to_markdown(report)``; with ``echo`` it is also printed to stdout.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{name}.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=ensure_ascii) + "\n"
    )
    markdown = to_markdown(report)
    (results_dir / f"{name}.md").write_text(markdown)
    if echo:
        print(markdown)
