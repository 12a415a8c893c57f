"""The container's job: read this task's shard, correct it, write one output file.

Environment (Robotoff's contract, extended; CLI options override it):
INPUT_FILE_PATH, OUTPUT_FILE_PATH (required), LEXICON_FILE_PATH (lexicon-cpu),
SPELLCHECK_ENGINE (lexicon-cpu | vllm, default lexicon-cpu), BATCH_TASK_INDEX (0),
BATCH_TASK_COUNT (1), BATCH_JOB_ID, BUCKET_NAME, SPELLCHECK_MODEL,
WORDLIST_FILE_PATH (lexicon-cpu's general word lists, a local Parquet file; default: the one
shipped in the image, spellcheck_job/data/wordfreq_lexicon.parquet).

Unlike Robotoff's container, no task calls Robotoff's import webhook or holds its key: the
pipeline knows when the whole job SUCCEEDED and imports, or hands the output to Robotoff, then.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from spellcheck_job import ENGINE_VERSION
from spellcheck_job.io import (
    OUTPUT_ERROR_EXIT_CODE,
    InputError,
    OutputError,
    is_gcs,
    join,
    open_parquet,
    read_rows,
    read_table,
    write_parquet_atomic,
)
from spellcheck_job.sharding import shard_range

logger = logging.getLogger("spellcheck_job")

JOB_TYPE = "ingredients_spellcheck"
INPUT_COLUMNS = ("code", "lang", "text")
LEXICON_COLUMNS = ("lang", "word", "n")
OUTPUT_SCHEMA = pa.schema(
    [
        pa.field("code", pa.string(), nullable=False),
        pa.field("lang", pa.string()),
        pa.field("text", pa.string()),
        pa.field("correction", pa.string()),
        pa.field("engine", pa.string()),
        pa.field("engine_version", pa.string()),
        pa.field("task_index", pa.int32()),
    ]
)
ENGINES = ("lexicon-cpu", "vllm")


class ConfigError(RuntimeError):
    """The container's configuration (environment, arguments) is unusable."""


class Engine(Protocol):
    """What the job needs from a correction engine."""

    name: str

    def correct_batch(
        self, texts: Sequence[str | None], langs: Sequence[str | None] | None = None
    ) -> list[str | None]: ...


@dataclass(frozen=True)
class JobConfig:
    """The resolved configuration of one task."""

    input_uri: str
    output_uri: str
    lexicon_uri: str | None
    engine: str
    task_index: int
    task_count: int
    batch_size: int
    job_id: str | None
    model: str
    wordlist_path: str | None = None


def _env_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def parse_config(argv: Sequence[str], env: dict[str, str]) -> JobConfig:
    """Resolve arguments over the environment; raise ConfigError naming what is wrong."""
    parser = argparse.ArgumentParser(description="Ingredients spellcheck batch task.")
    parser.add_argument("--engine", choices=ENGINES, help="overrides SPELLCHECK_ENGINE")
    parser.add_argument("--batch-size", type=int, default=None, help="texts per engine call")
    parser.add_argument("--input", help="overrides INPUT_FILE_PATH")
    parser.add_argument("--output", help="overrides OUTPUT_FILE_PATH")
    parser.add_argument("--lexicon", help="overrides LEXICON_FILE_PATH")
    parser.add_argument("--model", help="overrides SPELLCHECK_MODEL (vllm engine)")
    args = parser.parse_args(list(argv))

    def required(value: str | None, name: str) -> str:
        if not value:
            raise ConfigError(f"environment variable {name} is required but not set")
        return value

    engine = args.engine or env.get("SPELLCHECK_ENGINE", "").strip() or "lexicon-cpu"
    if engine not in ENGINES:
        raise ConfigError(f"SPELLCHECK_ENGINE must be one of {ENGINES}, got {engine!r}")
    input_uri = required(args.input or env.get("INPUT_FILE_PATH"), "INPUT_FILE_PATH")
    output_uri = required(args.output or env.get("OUTPUT_FILE_PATH"), "OUTPUT_FILE_PATH")
    lexicon_uri = args.lexicon or env.get("LEXICON_FILE_PATH") or None
    if engine == "lexicon-cpu":
        lexicon_uri = required(lexicon_uri, "LEXICON_FILE_PATH")
    task_count = _env_int(env, "BATCH_TASK_COUNT", 1)
    task_index = _env_int(env, "BATCH_TASK_INDEX", 0)
    if task_count < 1 or not 0 <= task_index < task_count:
        raise ConfigError(
            f"BATCH_TASK_INDEX={task_index} is not in [0, BATCH_TASK_COUNT={task_count})"
        )
    batch_size = args.batch_size or (256 if engine == "vllm" else 1000)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    return JobConfig(
        input_uri=input_uri,
        output_uri=output_uri,
        lexicon_uri=lexicon_uri,
        engine=engine,
        task_index=task_index,
        task_count=task_count,
        batch_size=batch_size,
        job_id=env.get("BATCH_JOB_ID") or None,
        model=args.model or env.get("SPELLCHECK_MODEL") or "openfoodfacts/spellcheck-mistral-7b",
        wordlist_path=env.get("WORDLIST_FILE_PATH") or None,
    )


def load_engine(config: JobConfig) -> Engine:
    """Build the configured engine (the lexicon engine reads its lexicon file)."""
    if config.engine == "vllm":
        from spellcheck_job.vllm_engine import VllmSpellchecker

        return VllmSpellchecker(config.model)
    from spellcheck_job.wordfreq_cpu import (
        WordFreqSpellchecker,
        food_from_rows,
        load_language,
        prebuilt_lists,
    )
    from spellcheck_job.wordlists import DEFAULT_PATH

    assert config.lexicon_uri is not None
    try:
        lexicon = read_table(config.lexicon_uri, LEXICON_COLUMNS)
    except InputError as exc:
        raise InputError(f"LEXICON_FILE_PATH: {exc}") from exc
    cols = lexicon.to_pydict()
    food = food_from_rows(zip(cols["lang"], cols["word"], cols["n"], strict=True))
    # The general lists' per-language indexes, built once (word_index): a task loads only its
    # texts' languages, in about 0.1 s each.
    prebuilt, common, langs = prebuilt_lists(config.wordlist_path)
    wordlist = config.wordlist_path or DEFAULT_PATH
    engine = WordFreqSpellchecker(
        food,
        lambda lang: load_language(wordlist, lang),
        foreign_common=common,
        prebuilt=prebuilt,
    )
    logger.info(
        "lexicon loaded: %d words (food words of %d languages; general word lists of %d "
        "languages from %s)",
        len(engine.counts),
        len(food),
        len(langs),
        config.wordlist_path or "the image",
    )
    return engine


def engine_label(engine: Engine) -> str:
    """The ``engine`` column value."""
    return engine.name


def run(config: JobConfig) -> str:
    """Process this task's shard; return the URI of the output file written."""
    parquet = open_parquet(config.input_uri)
    total = parquet.metadata.num_rows
    start, stop = shard_range(total, config.task_index, config.task_count)
    logger.info(
        "task %d/%d: rows [%d, %d) of %d in %s",
        config.task_index,
        config.task_count,
        start,
        stop,
        total,
        config.input_uri,
    )
    table = read_rows(parquet, start, stop, INPUT_COLUMNS)
    engine = load_engine(config)
    codes = [str(c) for c in table.column("code").to_pylist()]
    langs = table.column("lang").to_pylist()
    texts = table.column("text").to_pylist()
    prepare = getattr(engine, "prepare", None)
    if prepare is not None:  # lexicon-cpu: build the shard's language indexes first
        began = time.monotonic()
        ready = prepare(langs)
        logger.info(
            "indexed %d languages (%s) in %.2f s",
            len(ready),
            ", ".join(ready),
            time.monotonic() - began,
        )
    corrections: list[str | None] = []
    began = time.monotonic()
    for offset in range(0, len(texts), config.batch_size):
        end = offset + config.batch_size
        corrections.extend(engine.correct_batch(texts[offset:end], langs[offset:end]))
        logger.info("rows done %d / %d", len(corrections), len(texts))
    changed = sum(1 for t, c in zip(texts, corrections, strict=True) if c != t)
    # benchmarks/pipeline_benchmark.py parses this line (_ENGINE_LOG): keep its beginning.
    logger.info(
        "corrected %d texts (%d changed) in %.2f s, %d corrections",
        len(texts),
        changed,
        time.monotonic() - began,
        getattr(engine, "corrections", changed),
    )
    n = len(texts)
    output = pa.table(
        {
            "code": codes,
            "lang": langs,
            "text": texts,
            "correction": corrections,
            "engine": [engine_label(engine)] * n,
            "engine_version": [ENGINE_VERSION] * n,
            "task_index": [config.task_index] * n,
        },
        schema=OUTPUT_SCHEMA,
    )
    target = join(config.output_uri, f"part-{config.task_index:05d}.parquet")
    write_parquet_atomic(output, target)
    logger.info("wrote %d rows to %s", n, target)
    return target


def main(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> int:
    """Entry point: returns the process exit status (0 ok, 2 configuration/input error)."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    environ = dict(os.environ if env is None else env)
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv, environ)
        if is_gcs(config.output_uri) and not environ.get("BUCKET_NAME"):
            logger.info("BUCKET_NAME not set; using the bucket named in OUTPUT_FILE_PATH")
        run(config)
    except (ConfigError, InputError) as exc:
        logger.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OutputError as exc:  # transient: Batch retries the task (max_retry_count)
        logger.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return OUTPUT_ERROR_EXIT_CODE
    return 0
