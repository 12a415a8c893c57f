"""The CLI end to end on embedded defaults (local runner, real PostgreSQL, a Dagster instance
under a temporary DAGSTER_HOME)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from typer.testing import CliRunner

from robotoff_batch.cli import app, operations
from robotoff_batch.names import partitions_def_name

runner = CliRunner()


@pytest.fixture
def cli_env(tmp_path: Path, pg_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("ROBOTOFF_BATCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("ROBOTOFF_DATABASE_URL", pg_db)
    monkeypatch.delenv("ROBOTOFF_BATCH_ENV", raising=False)
    yield tmp_path


def test_launch_wait_status_import_cancel(cli_env: Path) -> None:
    launched = runner.invoke(app, ["launch", "ingredients-spellcheck", "limit=80", "--wait"])
    assert launched.exit_code == 0, launched.output
    job_id = re.search(r"launched batch job (\S+) \(80 products\)", launched.output).group(1)
    # each state once, in order, from the first one the follower saw to SUCCEEDED
    states = re.findall(rf"{job_id}: (\S+) → (\S+)", launched.output)
    assert states and states[0][0] == "(new)" and states[-1][1] == "SUCCEEDED", launched.output
    assert all(a[1] == b[0] for a, b in zip(states, states[1:], strict=False)), states
    assert len({new for _, new in states}) == len(states), states
    imported = int(re.search(r"imported (\d+) predictions", launched.output).group(1))

    # the launch and the import are runs of the same Dagster instance the UI reads
    instance = dg.DagsterInstance.get()
    jobs = {r.job_name for r in instance.get_runs()}
    assert {"launch_ingredients_spellcheck", "finish_ingredients_spellcheck"} <= jobs
    assert instance.has_dynamic_partition(partitions_def_name("ingredients-spellcheck"), job_id)
    assert operations.count(operations.Workspace.from_env(), job_id=job_id) == imported

    table = runner.invoke(app, ["status"])
    assert table.exit_code == 0 and job_id in table.output and "SUCCEEDED" in table.output
    one = runner.invoke(app, ["status", job_id])
    assert "Task 0 succeeded" in one.output and "QUEUED" in one.output
    # its cost: what this run would have cost on the configured machine, beside the ceiling
    usd = re.search(
        r"would-be cost \(local runner, nothing billed: the same run on the configured machine "
        r"in Cloud Batch\): (\$\d+\.\d+) = 1 attempt\(s\), [\d.]+ s of task time x "
        r"\$0\.896306/h \(g2-standard-8 \+ 1 x nvidia-l4, STANDARD\)",
        one.output,
    )
    assert usd, one.output
    per_1000 = re.search(r"per 1,000 products: \$(\d+\.\d+) \(80 products\)", one.output)
    assert per_1000 and float(per_1000.group(1)) == pytest.approx(
        float(usd.group(1)[1:]) / 80 * 1000, rel=0.01
    )
    assert "production worst-case ceiling: $43.02: $0.896306/h" in one.output
    assert "max_cost_usd $50.00" in one.output

    # the summary per job type and month has this job, at the same cost
    report = runner.invoke(app, ["cost"])
    assert report.exit_code == 0, report.output
    month = datetime.now(UTC).strftime("%Y-%m")
    (row,) = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in report.output.splitlines()
        if month in line and "ingredients-spellcheck" in line
    ]
    assert row[:4] == [month, "ingredients-spellcheck", "1", "0"], report.output
    assert row[5] == usd.group(1) and row[6] == "0"
    assert "local runner: nothing was billed" in report.output
    none = runner.invoke(app, ["cost", "--month", "1999-01"])
    assert none.exit_code == 0 and "no ended batch job in 1999-01" in none.output
    bad = runner.invoke(app, ["cost", "--month", "2026-13"])
    assert bad.exit_code != 0 and "YYYY-MM" in bad.output

    again = runner.invoke(app, ["import", job_id])
    assert again.exit_code == 0 and "already imported: nothing changed" in again.output
    assert operations.count(operations.Workspace.from_env(), job_id=job_id) == imported

    done = runner.invoke(app, ["cancel", job_id])
    assert "already ended SUCCEEDED: nothing to cancel" in done.output
    unknown = runner.invoke(app, ["cancel", "no-such-job-1"])
    assert "nothing to cancel" in unknown.output
    assert runner.invoke(app, ["status", "no-such-job-1"]).exit_code == 1


def test_bad_launch_parameters_and_empty_selection(cli_env: Path) -> None:
    bad = runner.invoke(app, ["launch", "ingredients-spellcheck", "limit=many"])
    assert (
        bad.exit_code == 1 and "limit" in bad.output and "invalid launch parameters" in (bad.output)
    )
    boolean = runner.invoke(app, ["launch", "ingredients-spellcheck", "limit=true"])
    assert boolean.exit_code == 1 and "limit: Input should be a valid integer (got True)" in (
        boolean.output
    )
    fraction = runner.invoke(app, ["launch", "ingredients-spellcheck", "min_fraction=true"])
    assert fraction.exit_code == 1 and "min_fraction: Input should be a valid number" in (
        fraction.output
    )
    tagged = runner.invoke(app, ["launch", "ingredients-spellcheck", "limit=!!python/int 3"])
    assert tagged.exit_code != 0 and "not a valid value" in tagged.output
    typo = runner.invoke(app, ["launch", "ingredients-spellcheck", "limt=5"])
    assert typo.exit_code == 1 and "limt" in typo.output
    nothing = runner.invoke(app, ["launch", "ingredients-spellcheck", "codes=[none-such]"])
    assert nothing.exit_code == 1 and "matched no product" in nothing.output
    assert "no batch job is launched" in nothing.output
    assert not list((cli_env / "home" / "local-batch").glob("ingredients-*"))
    unknown = runner.invoke(app, ["launch", "nope"])
    assert unknown.exit_code == 1 and "unknown job type 'nope'" in unknown.output


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed ``robotoff-batch`` command, as a user runs it."""
    command = Path(sys.executable).parent / "robotoff-batch"
    return subprocess.run(
        [str(command), *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_errors_are_one_line_and_the_trace_needs_debug(cli_env: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROBOTOFF_BATCH_GCP")}
    env["ROBOTOFF_BATCH_ENV"] = "production"
    plain = _cli("status", env=env)
    assert plain.returncode == 1
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 2, plain.stderr  # the reason, then the hint
    assert "ROBOTOFF_BATCH_GCP_PROJECT is not set" in lines[0] and "--debug" in lines[1]
    debug = _cli("--debug", "status", env=env)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_messages_keep_square_brackets_and_launch_help_lists_parameters(cli_env: Path) -> None:
    bad = runner.invoke(app, ["launch", "ingredients-spellcheck", "languages=[fr", "limit=2"])
    assert bad.exit_code != 0 and "languages=[fr" in bad.output
    helped = runner.invoke(app, ["launch", "--help"])
    assert "Launch parameters of ingredients-spellcheck:" in helped.output
    assert "limit=" in helped.output and "languages=" in helped.output


@pytest.mark.demo
def test_demo_twice_says_what_the_import_did(cli_env: Path) -> None:
    """A second demo corrects the same products: Robotoff's dedup rule keeps the stored
    predictions, and the summary says so instead of a bare "0 imported"."""
    first = runner.invoke(app, ["demo", "--limit", "120"])
    assert first.exit_code == 0, first.output
    made = re.search(r"(\d+) corrections made; (\d+) new predictions", first.output)
    assert made and int(made[1]) == int(made[2]) > 0, first.output
    second = runner.invoke(app, ["demo", "--limit", "120"])
    assert second.exit_code == 0, second.output
    assert f"{made[1]} corrections made; 0 new predictions, {made[1]} already stored" in (
        second.output
    )


def test_the_demo_runs_the_one_job_type_that_declares_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo picks its job type from the registry: the one with demo_params (the
    fixture's barcode-check declares none), and says so when none or several do."""
    import dataclasses

    from robotoff_batch.cli.demo import DemoJobTypeError, demo_job_type
    from robotoff_batch.job_types import PACKAGES_ENV, load_registry

    monkeypatch.setenv(PACKAGES_ENV, "tests.fixtures.job_types")
    registry = load_registry()
    assert demo_job_type(registry).name == "ingredients-spellcheck"
    fixture = registry["barcode-check"]

    class Declared(type(fixture.job_type)):  # type: ignore[misc]
        demo_params = {"limit": 3}

    several = {**registry, "barcode-check": dataclasses.replace(fixture, job_type=Declared())}
    with pytest.raises(DemoJobTypeError, match=r"2 do \(barcode-check, ingredients-spellcheck\)"):
        demo_job_type(several)
    with pytest.raises(DemoJobTypeError, match=r"0 do \(none\) among barcode-check"):
        demo_job_type({"barcode-check": fixture})


def test_a_second_cli_cancel_is_never_sent(cli_env: Path) -> None:
    """``cancel`` twice: the first is sent (or finds the job ended), the second finds it being
    cancelled or ended and sends nothing; neither re-sends a cancel (cancel_once)."""
    launched = runner.invoke(app, ["launch", "ingredients-spellcheck", "limit=300"])
    assert launched.exit_code == 0, launched.output
    job_id = re.search(r"launched batch job (\S+)", launched.output).group(1)
    first = runner.invoke(app, ["cancel", job_id])
    second = runner.invoke(app, ["cancel", job_id])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    said = [first.output, second.output]
    sent = [o for o in said if f"cancelled {job_id} (was " in o]
    assert len(sent) <= 1, said
    assert "nothing to cancel" in second.output or "not sent again" in second.output, said
    if sent:  # the job was still running: the first one sent it, the sensor records it
        assert "the sensor records it as CANCELLED" in first.output
