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
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from spellcheck_job import ENGINE_VERSION
from spellcheck_job.checkpoint import ManifestMismatch, TaskCheckpoint
from spellcheck_job.io import (
    OUTPUT_ERROR_EXIT_CODE,
    InputError,
    OutputError,
    is_gcs,
    open_parquet,
    read_rows,
    read_table,
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
        pa.field("skipped", pa.string()),  # why the text was not corrected (None: it was)
        # lexicon-cpu: the text's corrections as JSON, [{"before", "after", "rule",
        # "confidence"}] (None: no correction, or an engine that gives none: vllm)
        pa.field("corrections", pa.string()),
    ]
)
ENGINES = ("lexicon-cpu", "vllm")
#: Rows per checkpointed chunk, by engine: what a preempted attempt recomputes at most
#: (vllm: ~1 min on one L4 at the seed's 1,000 products / 1:30; lexicon-cpu: ~1 s).
DEFAULT_CHUNK_ROWS = {"vllm": 1024, "lexicon-cpu": 5000}
#: The CPU engine's length cap (it has no tokenizer): the longest main ingredients texts of
#: the dump are a few thousand characters; beyond this it is not an ingredient list.
MAX_TEXT_CHARS = 10_000
SKIP_TOO_LONG = "too_long"
SKIP_ENGINE_ERROR = "engine_error"


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
    chunk_rows: int = 1000
    attempt: int = 0
    model_revision: str | None = None
    quantization: str | None = "fp8"
    max_model_len: int = 1024
    weights_uri: str | None = None
    weights_dir: str | None = None
    carry_from: tuple[str, ...] = ()


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
    parser.add_argument("--chunk-rows", type=int, default=None, help="overrides CHUNK_ROWS")
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
    chunk_rows = args.chunk_rows or _env_int(env, "CHUNK_ROWS", DEFAULT_CHUNK_ROWS[engine])
    if chunk_rows < 1:
        raise ConfigError(f"CHUNK_ROWS must be >= 1, got {chunk_rows}")
    quantization = env.get("SPELLCHECK_QUANTIZATION", "fp8").strip()
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
        chunk_rows=chunk_rows,
        attempt=_env_int(env, "BATCH_TASK_RETRY_ATTEMPT", 0),
        model_revision=env.get("SPELLCHECK_MODEL_REVISION", "").strip() or None,
        quantization=None if quantization in ("", "none") else quantization,
        max_model_len=_env_int(env, "SPELLCHECK_MAX_MODEL_LEN", 1024),
        weights_uri=env.get("SPELLCHECK_WEIGHTS_URI", "").strip() or None,
        weights_dir=env.get("SPELLCHECK_WEIGHTS_DIR", "").strip() or None,
        carry_from=tuple(u for u in env.get("CARRY_OUTPUT_URIS", "").split(",") if u.strip()),
    )


#: Where a task copies the staged weights when SPELLCHECK_WEIGHTS_DIR is not set.
DEFAULT_WEIGHTS_DIR = "/tmp/spellcheck-weights"


def load_engine(config: JobConfig) -> Engine:
    """Build the configured engine (the lexicon engine reads its lexicon file)."""
    if config.engine == "vllm":
        from spellcheck_job.vllm_engine import VllmSpellchecker

        weights = config.weights_dir
        if config.weights_uri:  # staged once in the deployment's bucket: copied to local disk
            from spellcheck_job.io import download_prefix

            weights = weights or DEFAULT_WEIGHTS_DIR
            began = time.monotonic()
            n = download_prefix(config.weights_uri, weights)
            logger.info(
                "weights: %d files from %s in %.1f s",
                n,
                config.weights_uri,
                time.monotonic() - began,
            )
        return VllmSpellchecker(
            config.model,
            weights=weights,
            revision=config.model_revision,
            quantization=config.quantization,
            max_model_len=config.max_model_len,
        )
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
    """The ``engine`` column value (the import's ``predictor``)."""
    return engine.name


def engine_version(engine: Engine) -> str:
    """The ``engine_version`` column value (the import's ``predictor_version``): the vLLM
    engine's hash of model, revision, quantization and prompt; the CPU engine's version."""
    return str(getattr(engine, "version", ENGINE_VERSION))


class EngineFailure(RuntimeError):
    """Every text of a batch failed on its own: the engine is broken, not a text (the task
    fails, exit 1, and Batch retries it from its last chunk)."""


def skip_reason(engine: Engine, text: str) -> str | None:
    """Why a text is not sent to the engine: the engine's own guard (vLLM counts the
    prompt's tokens), else a length cap in characters."""
    guard = getattr(engine, "skip_reason", None)
    if guard is not None:
        return guard(text)  # type: ignore[no-any-return]
    if len(text) > MAX_TEXT_CHARS:
        return f"{SKIP_TOO_LONG}: {len(text)} characters > {MAX_TEXT_CHARS}"
    return None


Result = tuple[str | None, str | None, str | None]  # (correction, skip reason, corrections)


def corrections_json(details: Sequence[Any]) -> str | None:
    """A text's corrections (``wordfreq_cpu.Correction``) as the ``corrections`` column's
    JSON, None when there are none."""
    if not details:
        return None
    return json.dumps(
        [
            {"before": d.before, "after": d.after, "rule": d.rule, "confidence": d.confidence}
            for d in details
        ],
        ensure_ascii=False,
    )


def _generate(engine: Engine, texts: list[str], langs: list[str | None]) -> list[Result]:
    generate = getattr(engine, "generate", None)
    if generate is not None:  # vllm: corrections with their own skips (truncated)
        return [(g.correction, g.skipped, None) for g in generate(texts)]
    detailed = getattr(engine, "correct_batch_detailed", None)
    if detailed is not None:  # lexicon-cpu: each correction with its rule and confidence
        return [(c, None, corrections_json(d)) for c, d in detailed(texts, langs)]
    return [(c, None, None) for c in engine.correct_batch(texts, langs)]


def _isolating(engine: Engine, texts: list[str], langs: list[str | None]) -> list[Result]:
    """One engine call; on an error, the batch split in halves until the failing texts are
    alone, each then skipped with the error's class and message."""
    try:
        results = _generate(engine, texts, langs)
    except Exception as exc:  # noqa: BLE001 - isolated to the text that causes it
        if len(texts) == 1:
            message = " ".join(str(exc).split())[:200]
            return [(None, f"{SKIP_ENGINE_ERROR}: {type(exc).__name__}: {message}", None)]
        logger.warning(
            "engine error on a batch of %d texts (%s: %s): splitting it",
            len(texts),
            type(exc).__name__,
            exc,
        )
        mid = len(texts) // 2
        return _isolating(engine, texts[:mid], langs[:mid]) + _isolating(
            engine, texts[mid:], langs[mid:]
        )
    if len(results) != len(texts):
        raise EngineFailure(f"the engine returned {len(results)} results for {len(texts)} texts")
    return results


@dataclass
class ChunkResult:
    corrections: list[str | None]
    skipped: list[str | None]
    processed: int  # texts sent to the engine
    details: list[str | None] | None = None  # the ``corrections`` column (None: no engine's)

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for reason in self.skipped:
            if reason:
                kind = reason.split(":", 1)[0]
                found[kind] = found.get(kind, 0) + 1
        return found


def correct_chunk(
    engine: Engine, texts: Sequence[str | None], langs: Sequence[str | None], batch_size: int
) -> ChunkResult:
    """Correct one chunk's texts: empty ones unchanged, too long ones skipped, the rest sent
    in batches of ``batch_size`` with errors isolated (no text fails the task)."""
    corrections: list[str | None] = list(texts)
    skipped: list[str | None] = [None] * len(texts)
    details: list[str | None] = [None] * len(texts)
    send: list[int] = []
    for i, text in enumerate(texts):
        if not text or not text.strip():
            continue
        reason = skip_reason(engine, text)
        if reason is not None:
            corrections[i], skipped[i] = None, reason
            continue
        send.append(i)
    for offset in range(0, len(send), batch_size):
        batch = send[offset : offset + batch_size]
        results = _isolating(engine, [texts[i] or "" for i in batch], [langs[i] for i in batch])
        errors = sum(1 for _, s, _ in results if s and s.startswith(SKIP_ENGINE_ERROR))
        if len(batch) > 1 and errors == len(batch):
            raise EngineFailure(
                f"all {len(batch)} texts of a batch failed one by one ({results[0][1]}): the "
                "engine is broken"
            )
        for i, (correction, reason, found) in zip(batch, results, strict=True):
            corrections[i], skipped[i], details[i] = correction, reason, found
    return ChunkResult(corrections, skipped, processed=len(send), details=details)


def run(config: JobConfig) -> str:
    """Process this task's shard chunk by chunk, resuming after the last chunk an earlier
    attempt completed; return the URI of the task's manifest."""
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
    codes = [str(c) for c in table.column("code").to_pylist()]
    langs = table.column("lang").to_pylist()
    texts = table.column("text").to_pylist()
    engine = load_engine(config)
    checkpoint = TaskCheckpoint.open(
        output_uri=config.output_uri,
        task_index=config.task_index,
        task_count=config.task_count,
        shard=(start, stop),
        chunk_rows=config.chunk_rows,
        engine=engine_label(engine),
        predictor_version=engine_version(engine),
        attempt=config.attempt,
        carry_from=config.carry_from,
    )
    if checkpoint.attempts[0].get("carried_from") and checkpoint.generation == 0:
        checkpoint.save()  # list the carried chunks before computing anything
    if checkpoint.complete:
        logger.info("%s is complete: nothing left to do", checkpoint.manifest_uri)
        return checkpoint.manifest_uri
    while checkpoint.next_chunk < checkpoint.chunk_count:
        lo, hi = checkpoint.chunk_range(checkpoint.next_chunk)
        if not checkpoint.adopt_unlisted(codes[lo:hi]):
            break
    first = checkpoint.next_chunk
    todo = [checkpoint.chunk_range(k) for k in range(first, checkpoint.chunk_count)]
    prepare = getattr(engine, "prepare", None)
    if prepare is not None and todo:  # lexicon-cpu: build the left rows' language indexes
        began = time.monotonic()
        ready = prepare(langs[todo[0][0] :])
        logger.info(
            "indexed %d languages (%s) in %.2f s",
            len(ready),
            ", ".join(ready),
            time.monotonic() - began,
        )
    processed = changed = 0
    skipped: dict[str, int] = {}
    began = time.monotonic()
    for lo, hi in todo:
        result = correct_chunk(engine, texts[lo:hi], langs[lo:hi], config.batch_size)
        n = hi - lo
        output = pa.table(
            {
                "code": codes[lo:hi],
                "lang": langs[lo:hi],
                "text": texts[lo:hi],
                "correction": result.corrections,
                "engine": [engine_label(engine)] * n,
                "engine_version": [engine_version(engine)] * n,
                "task_index": [config.task_index] * n,
                "skipped": result.skipped,
                "corrections": result.details or [None] * n,
            },
            schema=OUTPUT_SCHEMA,
        )
        uri = checkpoint.write_chunk(output, result.counts(), result.processed)
        processed += result.processed
        changed += sum(
            1 for t, c in zip(texts[lo:hi], result.corrections, strict=True) if c and c != t
        )
        for kind, count in result.counts().items():
            skipped[kind] = skipped.get(kind, 0) + count
        logger.info("rows done %d / %d (%s)", hi, len(texts), uri)
    if checkpoint.chunk_count == 0:
        checkpoint.complete = True
        checkpoint.save()
    # benchmarks/pipeline_benchmark.py parses this line (_ENGINE_LOG): keep its beginning.
    logger.info(
        "corrected %d texts (%d changed) in %.2f s, %d corrections",
        processed,
        changed,
        time.monotonic() - began,
        getattr(engine, "corrections", changed),
    )
    logger.info(
        "attempt %d: chunks %d..%d of %d, %d texts sent to the engine, skipped %s; task "
        "total skipped %s; manifest %s",
        config.attempt,
        first,
        checkpoint.chunk_count - 1,
        checkpoint.chunk_count,
        processed,
        skipped or "none",
        checkpoint.skipped or "none",
        checkpoint.manifest_uri,
    )
    return checkpoint.manifest_uri


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
    except ManifestMismatch as exc:
        logger.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OutputError as exc:  # transient: Batch retries the task (max_retry_count)
        logger.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return OUTPUT_ERROR_EXIT_CODE
    return 0
