"""The vLLM engine and the container's guards without a GPU: the container's code is real
(prompt, sampling parameters, the length guard with a real ``tokenizers`` BPE this test
trains, output handling, batch splitting, chunks); only the ``vllm`` module is played by a
stand-in with vLLM's interface, which behaves as vLLM does where it matters here (a prompt of
max_model_len tokens or more rejects the whole ``generate`` call)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from robotoff_batch.paths import CONTAINERS_DIR

sys.path.insert(0, str(CONTAINERS_DIR / "ingredients-spellcheck"))

from spellcheck_job import main as job_main  # noqa: E402
from spellcheck_job import vllm_engine  # noqa: E402
from spellcheck_job.vllm_engine import (  # noqa: E402
    VllmSpellchecker,
    build_prompt,
    predictor_version,
    token_count,
)

CORPUS = [
    "sucre, farine de blé, huile de palme, sel, levure",
    "sugar, wheat flour, palm oil, salt, yeast, milk powder",
    "###Correct the list of ingredients:\n\n\n###Correction:\n",
    "eau, jus de citron, arômes naturels, conservateur E202",
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    """A small byte-level BPE, trained here (no hub)."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["[UNK]"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    return tok


@dataclass
class Params:
    temperature: float
    max_tokens: int


@dataclass
class FakeLLM:
    """vLLM's ``LLM`` as the engine uses it. Corrects by a replacement table; ``poison``
    texts make the call raise (as a kernel or tokenizer error would); prompts of
    max_model_len tokens or more reject the whole call, as vLLM's input validation does."""

    kwargs: dict[str, Any]
    tokenizer: Tokenizer
    poison: set[str] = field(default_factory=set)
    truncate: set[str] = field(default_factory=set)
    calls: list[int] = field(default_factory=list)

    def get_tokenizer(self) -> Tokenizer:
        return self.tokenizer

    def generate(self, prompts: list[str], params: Params, use_tqdm: bool = True) -> list[Any]:
        self.calls.append(len(prompts))
        limit = self.kwargs["max_model_len"]
        outputs = []
        for prompt in prompts:
            n = len(self.tokenizer.encode(prompt).ids)
            if n >= limit:
                raise ValueError(f"The decoder prompt (length {n}) is longer than {limit}")
            text = prompt.removeprefix(vllm_engine.PROMPT_PREFIX).removesuffix(
                vllm_engine.PROMPT_SUFFIX
            )
            if text in self.poison:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            finish = "length" if text in self.truncate else "stop"
            generated = " " + text.replace("farinne", "farine") + "\n"  # raw: spaces kept
            outputs.append(
                SimpleNamespace(
                    outputs=[SimpleNamespace(text=generated, finish_reason=finish, token_ids=[1])]
                )
            )
        return outputs


def fake_vllm(tokenizer: Tokenizer, **behaviour: Any) -> tuple[SimpleNamespace, list[FakeLLM]]:
    made: list[FakeLLM] = []

    def llm(**kwargs: Any) -> FakeLLM:
        made.append(FakeLLM(kwargs=kwargs, tokenizer=tokenizer, **behaviour))
        return made[-1]

    return SimpleNamespace(LLM=llm, SamplingParams=Params), made


def test_defaults_are_robotoffs_production_settings(tokenizer: Tokenizer) -> None:
    module, made = fake_vllm(tokenizer)
    engine = VllmSpellchecker(vllm=module)
    # batch/spellcheck/main.py parse(): model, max_model_len 1024, fp8, dtype auto;
    # SamplingParams(temperature=0, max_tokens=1024)
    assert made[0].kwargs == {
        "model": "openfoodfacts/spellcheck-mistral-7b",
        "tokenizer": "openfoodfacts/spellcheck-mistral-7b",
        "revision": None,
        "max_model_len": 1024,
        "dtype": "auto",
        "quantization": "fp8",
    }
    assert engine.sampling_params == Params(temperature=0.0, max_tokens=1024)
    assert engine.name == "fine-tuned-mistral-7b"  # robotoff/batch/__init__.py:70
    assert build_prompt("sucre") == "###Correct the list of ingredients:\nsucre\n\n###Correction:\n"


def test_staged_weights_are_loaded_from_their_directory(tokenizer: Tokenizer) -> None:
    module, made = fake_vllm(tokenizer)
    rev = "a" * 40
    VllmSpellchecker(revision=rev, weights="/weights/spellcheck", vllm=module)
    assert made[0].kwargs["model"] == made[0].kwargs["tokenizer"] == "/weights/spellcheck"
    assert made[0].kwargs["revision"] is None  # a local directory has no revisions


def test_raw_generation_is_kept_and_a_truncated_one_is_skipped(tokenizer: Tokenizer) -> None:
    module, _ = fake_vllm(tokenizer, truncate={"sel, levure"})
    engine = VllmSpellchecker(vllm=module)
    results = engine.generate(["sucre, farinne", "sel, levure"])
    assert results[0].correction == " sucre, farine\n" and results[0].skipped is None
    assert results[1].correction is None and results[1].skipped is not None
    assert results[1].skipped.startswith("truncated")


def test_predictor_version_changes_exactly_with_revision_quantization_or_prompt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = "openfoodfacts/spellcheck-mistral-7b"
    base = predictor_version(model=model, revision="a" * 40, quantization="fp8")
    assert base.startswith("llm-v1-") and len(base) == len("llm-v1-") + 10
    assert predictor_version(model=model, revision="a" * 40, quantization="fp8") == base
    assert predictor_version(model=model, revision="b" * 40, quantization="fp8") != base
    assert predictor_version(model=model, revision="a" * 40, quantization=None) != base
    assert predictor_version(model="other/model", revision="a" * 40, quantization="fp8") != base
    monkeypatch.setattr(vllm_engine, "PROMPT_SUFFIX", "\n\n### Correction:\n")
    assert predictor_version(model=model, revision="a" * 40, quantization="fp8") != base


def test_length_guard_counts_with_the_models_tokenizer(tokenizer: Tokenizer) -> None:
    module, _ = fake_vllm(tokenizer)
    engine = VllmSpellchecker(max_model_len=64, vllm=module)
    short = "sucre, sel"
    assert engine.skip_reason(short) is None
    # Find the longest text whose prompt fits, by the tokenizer itself: the guard is exact.
    words = ("farine de blé, " * 40).split(" ")
    fits = ""
    for i in range(1, len(words)):
        candidate = " ".join(words[:i])
        if token_count(tokenizer, build_prompt(candidate)) < 64:
            fits = candidate
    longer = fits + " huile"
    assert engine.skip_reason(fits) is None
    reason = engine.skip_reason(longer)
    assert reason is not None and reason.startswith("too_long: ") and "max_model_len 64" in reason


def test_no_text_fails_the_batch(tokenizer: Tokenizer) -> None:
    """A text over the limit is not sent (vLLM would reject the whole call), a text that
    breaks the engine is isolated by splitting, every other text is corrected."""
    module, made = fake_vllm(tokenizer, poison={"poison, sel"})
    engine = VllmSpellchecker(max_model_len=64, vllm=module)
    texts: list[str | None] = [f"sucre, farinne {i}" for i in range(8)]
    texts[2] = "farine de blé, " * 1400  # ~20,000 characters
    texts[5] = "poison, sel"
    texts[6] = None
    result = job_main.correct_chunk(engine, texts, ["fr"] * 8, batch_size=8)
    assert result.skipped[2] is not None and result.skipped[2].startswith("too_long")
    assert result.skipped[5] is not None and result.skipped[5].startswith(
        "engine_error: RuntimeError: CUDA error"
    )
    assert result.corrections[2] is None and result.corrections[5] is None
    assert result.corrections[6] is None and result.skipped[6] is None  # empty: unchanged
    for i in (0, 1, 3, 4, 7):
        assert result.corrections[i] == f" sucre, farine {i}\n" and result.skipped[i] is None
    assert result.counts() == {"too_long": 1, "engine_error": 1}
    assert result.processed == 6  # the long text was never sent
    # one call of 6 failed, then halves: [3] ok, [3] failed -> [1] ok, [2] failed -> [1], [1]
    assert made[0].calls[0] == 6 and sum(made[0].calls) > 6


def test_an_engine_that_fails_every_text_fails_the_task(tokenizer: Tokenizer) -> None:
    texts = [f"sel {i}" for i in range(4)]
    module, _ = fake_vllm(tokenizer, poison=set(texts))
    engine = VllmSpellchecker(vllm=module)
    with pytest.raises(job_main.EngineFailure, match="all 4 texts"):
        job_main.correct_chunk(engine, texts, [None] * 4, batch_size=4)


def test_the_container_runs_the_vllm_engine_with_its_environment(
    tokenizer: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """parse_config -> load_engine -> run, with the job config's variables: revision pinned,
    weights staged, quantization; the output names the predictor and its version."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    module, made = fake_vllm(tokenizer)
    monkeypatch.setitem(sys.modules, "vllm", module)
    pq.write_table(
        pa.table(
            {"code": ["1", "2", "3"], "lang": ["fr"] * 3, "text": ["farinne", "x" * 20_000, "sel"]}
        ),
        tmp_path / "input.parquet",
    )
    rev = "0123456789abcdef0123456789abcdef01234567"
    env = {
        "INPUT_FILE_PATH": str(tmp_path / "input.parquet"),
        "OUTPUT_FILE_PATH": str(tmp_path / "output"),
        "SPELLCHECK_MODEL_REVISION": rev,
        "SPELLCHECK_WEIGHTS_DIR": str(tmp_path / "weights"),
        "CHUNK_ROWS": "2",
    }
    (tmp_path / "weights").mkdir()
    assert job_main.main(["--engine", "vllm"], env) == 0
    assert made[0].kwargs["model"] == str(tmp_path / "weights")
    manifest = json.loads((tmp_path / "output" / "task-00000" / "manifest.json").read_text())
    expected = predictor_version(
        model="openfoodfacts/spellcheck-mistral-7b", revision=rev, quantization="fp8"
    )
    assert manifest["engine"] == "fine-tuned-mistral-7b"
    assert manifest["predictor_version"] == expected
    assert manifest["skipped"] == {"too_long": 1} and manifest["complete"]
    rows = [r for c in manifest["chunks"] for r in pq.read_table(c["uri"]).to_pylist()]
    assert [r["engine_version"] for r in rows] == [expected] * 3
    assert rows[0]["correction"] == " farine\n"
