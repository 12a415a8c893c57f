"""Issue 22: incremental launches skip the products whose text and model are unchanged since
their last verdict. Real embedded PostgreSQL, real DuckDB and Parquet, the real container (the
CPU engine) on the local runner, the real import."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robotoff_batch.assets.launch import launch_op_name
from robotoff_batch.config.loader import load_job_config
from robotoff_batch.job_types.ingredients_spellcheck.identity import (
    CONTAINER_DIR,
    model_identity,
)
from robotoff_batch.job_types.ingredients_spellcheck.imports import KNOWN_PREDICTIONS_SQL
from robotoff_batch.job_types.ingredients_spellcheck.selection import launch_pass
from robotoff_batch.paths import JOB_CONFIGS_DIR, SAMPLE_DATA_DIR
from robotoff_batch.predictions.known import KNOWN_SCHEMA, ModelIdentity
from robotoff_batch.predictions.store import PredictionStore
from tests.test_cli import cli_env  # noqa: F401 (the fixture)
from tests.test_e2e import (
    failure_text,
    instance,  # noqa: F401 (the fixture)
    launch,
    make_defs,
    make_resources,
    run_request,
    tick_until_done,
)

SAMPLE = SAMPLE_DATA_DIR / "food_sample_2026.parquet"
JOB_CONFIG = load_job_config(JOB_CONFIGS_DIR / "ingredients-spellcheck.yaml").config
ALL = 5_000  # above the sample's selectable products: a launch takes them all


def _products_meta(result: Any) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        if mat.asset_key.path[-1] == "products":
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError("no products materialization")


def _submitted(result: Any) -> list[str]:
    return [
        str(e.materialization.metadata["batch_job_id"].value)
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.path[-1] == "batch_job_submission"
    ]


def _staged_codes(tmp_path: Path, job_id: str) -> list[str]:
    path = tmp_path / "staging" / "ingredients-spellcheck" / job_id / "input.parquet"
    return [str(c) for c in pq.read_table(path).column("code").to_pylist()]


def _edit_text(src: Path, dst: Path, code: str, suffix: str) -> None:
    """A copy of the dump where one product's main ingredients text got ``suffix``."""
    with duckdb.connect() as con:
        con.execute(
            f"""COPY (SELECT * REPLACE (CASE WHEN code = $code THEN list_transform(
                ingredients_text, lambda x: CASE WHEN x.lang = 'main'
                THEN struct_pack(lang := x.lang, text := x.text || '{suffix}') ELSE x END)
                ELSE ingredients_text END AS ingredients_text)
            FROM read_parquet('{src}')) TO '{dst}' (FORMAT parquet)""",
            {"code": code},
        )


def _run_and_import(defs: Any, inst: dg.DagsterInstance, resources: Any) -> None:
    (request,), _, _ = tick_until_done(defs, inst, resources)
    finished = run_request(defs, inst, request)
    assert finished.success, failure_text(finished)


def _import_in_order(
    defs: Any, inst: dg.DagsterInstance, resources: Any, job_ids: list[str]
) -> None:
    """Import the jobs ``job_ids`` in that order, once the sensor has requested each: two
    jobs that end between two ticks are requested in one (their order there is not theirs)."""
    requested: dict[str, dg.RunRequest] = {}
    for _ in range(40):
        got, _, _ = tick_until_done(defs, inst, resources)
        requested.update({r.partition_key: r for r in got if r.partition_key in job_ids})
        if len(requested) == len(job_ids):
            break
        time.sleep(0.25)
    assert sorted(requested) == sorted(job_ids)
    for job_id in job_ids:
        finished = run_request(defs, inst, requested[job_id])
        assert finished.success, failure_text(finished)


def test_a_second_launch_over_the_same_dump_submits_nothing_and_an_edit_is_selected_again(
    tmp_path: Path,
    instance: dg.DagsterInstance,  # noqa: F811 (the fixture imported above)
    pg_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dump = tmp_path / "food.parquet"
    dump.write_bytes(SAMPLE.read_bytes())
    resources = make_resources(tmp_path, pg_db, dump=dump)
    defs = make_defs(resources)

    first = launch(defs, instance, limit=ALL, skip_unchanged=True)
    assert first.success, failure_text(first)
    meta = _products_meta(first)
    selected = int(meta["rows"])
    assert selected > 100 and meta["skipped_unchanged"] == 0 and meta["known_texts"] == 0
    assert meta["expected_cost_usd"] >= 0 and meta["cost_ceiling_usd"] == JOB_CONFIG.max_cost_usd
    (job_id,) = _submitted(first)
    first_codes = _staged_codes(tmp_path, job_id)
    _run_and_import(defs, instance, resources)
    with psycopg.connect(pg_db) as conn:
        recorded = conn.execute("SELECT count(*), count(DISTINCT text_md5) FROM batch_known_text")
        n_known, _ = recorded.fetchone()  # type: ignore[misc]
    assert n_known == selected  # every verdict recorded, unchanged texts included

    # the same dump again: nothing left, no job, and the launch says why
    second = launch(defs, instance, limit=ALL, skip_unchanged=True)
    assert second.success, failure_text(second)
    assert _submitted(second) == []
    meta = _products_meta(second)
    assert meta["rows"] == 0 and meta["skipped_unchanged"] == selected
    assert "nothing left to do" in meta["nothing_left"] and "unchanged" in meta["nothing_left"]
    engine = resources["batch_engine"].get_engine()
    assert [j.job_id for j in engine.list_jobs(labels={})] == [job_id]  # no orphan job

    # by hand (skip_unchanged false, the default) every product is selected again
    by_hand = launch(defs, instance, limit=ALL)
    assert by_hand.success, failure_text(by_hand)
    assert _products_meta(by_hand)["rows"] == selected
    assert "skipped_unchanged" not in _products_meta(by_hand)

    # one product's text edited in the next dump: it alone is selected
    edited_code = first_codes[len(first_codes) // 2]
    edited = tmp_path / "food-edited.parquet"
    _edit_text(dump, edited, edited_code, ", sel")
    resources2 = make_resources(tmp_path, pg_db, dump=edited)
    defs2 = make_defs(resources2)
    third = launch(defs2, instance, limit=ALL, skip_unchanged=True)
    assert third.success, failure_text(third)
    meta = _products_meta(third)
    assert meta["rows"] == 1 and meta["skipped_unchanged"] == selected - 1
    (third_id,) = _submitted(third)
    assert _staged_codes(tmp_path, third_id) == [edited_code]
    # the imports (the by-hand job's: every product again; then this one's) replace the hashes
    # (one row per product and model, the last job's; the edited product's the new text's)
    (by_hand_id,) = _submitted(by_hand)
    _import_in_order(defs2, instance, resources2, [by_hand_id, third_id])
    staged = tmp_path / "staging" / "ingredients-spellcheck" / third_id / "input.parquet"
    (new_text,) = pq.read_table(staged).column("text").to_pylist()
    with psycopg.connect(pg_db) as conn:
        mine = conn.execute(
            "SELECT barcode, encode(text_md5, 'hex'), batch_job_id FROM batch_known_text "
            "WHERE barcode = %s",
            (edited_code,),
        ).fetchall()
        after = conn.execute("SELECT count(*) FROM batch_known_text").fetchone()
    assert mine == [(edited_code, hashlib.md5(new_text.encode()).hexdigest(), third_id)]
    assert after == (n_known,)

    # a new model version: every product needs work again
    import spellcheck_job

    monkeypatch.setattr(spellcheck_job, "ENGINE_VERSION", "999")
    fourth = launch(defs, instance, limit=ALL, skip_unchanged=True)
    assert fourth.success, failure_text(fourth)
    meta = _products_meta(fourth)
    assert meta["rows"] == selected and meta["skipped_unchanged"] == 0
    assert meta["model_identity"] == "lexicon-cpu 999"


def _known_of(codes_langs_texts: list[tuple[str, str, str]]) -> pa.Table:
    return pa.table(
        {
            "code": [c for c, _, _ in codes_langs_texts],
            "lang": [lang for _, lang, _ in codes_langs_texts],
            "text_hash": [hashlib.md5(t.encode()).hexdigest() for _, _, t in codes_langs_texts],
        },
        schema=KNOWN_SCHEMA,
    )


def _pass(out: Path, **kwargs: Any) -> Any:
    args: dict[str, Any] = {"limit": ALL, "min_fraction": 0.0, "max_fraction": 0.4, "facts": False}
    return launch_pass(dump_path=str(SAMPLE), work_dir=out, **{**args, **kwargs})


def test_limit_counts_the_products_that_need_work(tmp_path: Path) -> None:
    """`limit=N` after skipping: the N most popular products not known, in order; a known
    code with another text or another language is not skipped."""
    everything = pq.read_table(_pass(tmp_path / "all").input_path)
    rows = everything.to_pylist()
    known = _known_of([(r["code"], r["lang"] or "", r["text"]) for r in rows[:10]])
    # the same product with another text, or the same text in another language: not skipped
    other = _known_of(
        [(rows[10]["code"], rows[10]["lang"] or "", rows[10]["text"] + "x")]
        + [(rows[11]["code"], "xx", rows[11]["text"])]
    )
    # a text known twice (our records and Robotoff's predictions) is skipped once
    done = _pass(tmp_path / "skip", limit=5, known=pa.concat_tables([known, known, other]))
    assert done.counts["skipped_unchanged"] == 10
    got = pq.read_table(done.input_path).column("code").to_pylist()
    assert got == [r["code"] for r in rows[10:15]]
    # no known set: the plain selection, untouched
    plain = _pass(tmp_path / "plain", limit=5)
    assert pq.read_table(plain.input_path).column("code").to_pylist() == [
        r["code"] for r in rows[:5]
    ]
    assert "skipped_unchanged" not in plain.counts


def test_skipped_counts_only_the_products_the_launchs_filters_admit(tmp_path: Path) -> None:
    """A launch narrowed by its parameters (a language, a fraction range) says it skipped only
    the known products it would otherwise have selected, not every known text of the dump."""
    rows = pq.read_table(_pass(tmp_path / "all").input_path).to_pylist()
    langs = sorted(
        {r["lang"] for r in rows}, key=lambda lang: -sum(r["lang"] == lang for r in rows)
    )
    lang = langs[0]
    known = _known_of([(r["code"], r["lang"] or "", r["text"]) for r in rows])  # all known
    narrowed = _pass(tmp_path / "lang", languages=[lang], known=known)
    in_lang = sum(r["lang"] == lang for r in rows)
    assert 0 < in_lang < len(rows)
    assert narrowed.counts["skipped_unchanged"] == in_lang
    assert narrowed.counts["selected"] == 0
    # a fraction range admitting fewer products: fewer skipped
    half = sorted(r["fraction"] for r in rows)[len(rows) // 2]
    low = _pass(tmp_path / "low", max_fraction=half, known=known)
    assert low.counts["skipped_unchanged"] == sum(r["fraction"] <= half for r in rows)


def test_the_known_set_is_read_once_from_our_records_and_robotoffs_predictions(
    pg_db: str,
) -> None:
    """Robotoff's own spellcheck predictions of the identity count (postgres target): the
    hash PostgreSQL computes of data->>'original' is DuckDB's md5 of the text; another
    predictor_version, type or server type does not."""
    store = PredictionStore(conninfo=pg_db)
    store.ensure_schema()
    identity = ModelIdentity("fine-tuned-mistral-7b", "llm-v1-abc")
    text = "Sucre, crème fraîche, farine de blé 🌾"
    with psycopg.connect(pg_db) as conn:
        for barcode, version, type_ in [
            ("1", "llm-v1-abc", "ingredient_spellcheck"),
            ("2", "llm-v1-old", "ingredient_spellcheck"),
            ("3", "llm-v1-abc", "category"),
        ]:
            conn.execute(
                "INSERT INTO prediction (barcode, type, data, timestamp, value_tag, predictor, "
                "predictor_version, server_type) VALUES (%s, %s, %s, now(), 'fr', "
                "'fine-tuned-mistral-7b', %s, 'off')",
                (barcode, type_, psycopg.types.json.Jsonb({"original": text}), version),
            )
        conn.execute(
            "INSERT INTO batch_known_text VALUES ('ingredients-spellcheck', "
            "'fine-tuned-mistral-7b', 'llm-v1-abc', '4', '', decode(md5('x'), 'hex'), 'j')"
        )
    table = store.known_texts(
        job_type="ingredients-spellcheck",
        identity=identity,
        predictions_sql=KNOWN_PREDICTIONS_SQL,
    )
    assert table.schema == KNOWN_SCHEMA
    got = sorted(table.to_pylist(), key=lambda r: r["code"])
    with duckdb.connect() as con:
        duck = con.execute("SELECT md5($t)", {"t": text}).fetchone()
    assert duck is not None
    assert got == [
        {"code": "1", "lang": "fr", "text_hash": duck[0]},
        {"code": "4", "lang": "", "text_hash": hashlib.md5(b"x").hexdigest()},
    ]
    # our records alone (the robotoff_api target): Robotoff's rows are not read
    own = store.known_texts(job_type="ingredients-spellcheck", identity=identity)
    assert own.column("code").to_pylist() == ["4"]


def test_the_gpu_models_identity_is_the_containers_and_moves_with_the_revision() -> None:
    import sys

    sys.path.insert(0, str(CONTAINER_DIR))
    from spellcheck_job.vllm_engine import predictor_version

    env = JOB_CONFIG.resources.environment
    pinned = {**env, "SPELLCHECK_MODEL_REVISION": "a" * 40}
    config = JOB_CONFIG.model_copy(
        update={"resources": JOB_CONFIG.resources.model_copy(update={"environment": pinned})}
    )
    identity = model_identity(config)
    assert identity.predictor == "fine-tuned-mistral-7b"
    assert identity.predictor_version == predictor_version(
        model=env["SPELLCHECK_MODEL"], revision="a" * 40, quantization="fp8"
    )
    moved = {**pinned, "SPELLCHECK_MODEL_REVISION": "b" * 40}
    other = config.model_copy(
        update={"resources": config.resources.model_copy(update={"environment": moved})}
    )
    assert model_identity(other).predictor_version != identity.predictor_version


def test_the_schedule_skips_unchanged_and_a_launch_by_hand_does_not() -> None:
    from robotoff_batch.assets.launch import schedule_run_config
    from robotoff_batch.job_types import load_registry
    from robotoff_batch.job_types.ingredients_spellcheck import SpellcheckLaunch

    jt = load_registry()["ingredients-spellcheck"].job_type
    assert schedule_run_config(jt) == {
        "ops": {launch_op_name(jt.key_prefix): {"config": {"skip_unchanged": True}}}
    }
    assert SpellcheckLaunch().skip_unchanged is False
    from robotoff_batch.cli.jobs import launch_parameters_help

    (line,) = [x for x in launch_parameters_help().splitlines() if "skip_unchanged" in x]
    assert "(default False)" in line and "schedule launches with true" in line


def test_launch_command_says_what_was_skipped_and_that_nothing_was_launched(
    cli_env: Path,  # noqa: F811 (the fixture imported below)
) -> None:
    import re

    from typer.testing import CliRunner

    from robotoff_batch.cli import app

    runner = CliRunner()
    args = ["launch", "ingredients-spellcheck", f"limit={ALL}", "skip_unchanged=true"]
    first = runner.invoke(app, [*args, "--wait"])
    assert first.exit_code == 0, first.output
    found = re.search(
        r"launched batch job \S+ \((\d+) products\); 0 skipped as unchanged; expected cost "
        r"\$\d+\.\d\d, ceiling \$50\.00",
        first.output,
    )
    assert found, first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert (
        f"no batch job launched: nothing left to do: {found.group(1)} products skipped as "
        "unchanged" in second.output
    ), second.output
