"""Production GPU engine: Open Food Facts' fine-tuned Mistral-7B served by vLLM (offline, batched).

Defaults are Robotoff's production settings (batch/spellcheck/main.py at release 1.85.10,
``parse()`` and ``batch_inference``): ``quantization="fp8"``, ``max_model_len=1024``,
``dtype="auto"``, ``SamplingParams(temperature=0, max_tokens=1024)``, the prompt of
``prepare_instruction`` and the raw generation kept (no strip). What differs, and why, is the
table in ../README.md.

vllm is imported lazily (only when no ``vllm`` module is given), so this module, the prompt,
the length guard and the output handling import and run without it; tests give a stand-in
for the ``vllm`` module (its ``LLM`` with ``generate`` and ``get_tokenizer``, its
``SamplingParams``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: The ``predictor`` Robotoff gives this model's predictions (robotoff/batch/__init__.py:70).
ENGINE_NAME = "fine-tuned-mistral-7b"
DEFAULT_MODEL = "openfoodfacts/spellcheck-mistral-7b"
PROMPT_PREFIX = "###Correct the list of ingredients:\n"
PROMPT_SUFFIX = "\n\n###Correction:\n"
DEFAULT_QUANTIZATION = "fp8"
DEFAULT_MAX_MODEL_LEN = 1024
DEFAULT_MAX_TOKENS = 1024
DEFAULT_TEMPERATURE = 0.0

SKIP_TOO_LONG = "too_long"
SKIP_TRUNCATED = "truncated"


def build_prompt(text: str) -> str:
    """The instruction prompt the model was fine-tuned on (Robotoff's ``prepare_instruction``,
    byte for byte)."""
    return PROMPT_PREFIX + text + PROMPT_SUFFIX


def predictor_version(*, model: str, revision: str | None, quantization: str | None) -> str:
    """``llm-v1-<10 hex>``: Robotoff's prefix (robotoff/batch/__init__.py:51), then a hash of
    exactly what changes the predictions: the model and its revision, the quantization and
    the prompt. Robotoff appends the import's timestamp instead, so each of its imports is a
    new version; ours changes only when the model does, so a re-run keeps (not replaces) the
    predictions it already made."""
    key = "\x1f".join([model, revision or "", quantization or "", build_prompt("\x00")]).encode(
        "utf-8"
    )
    return "llm-v1-" + hashlib.sha256(key).hexdigest()[:10]


def token_count(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` as the model's tokenizer counts them (special tokens included, as
    vLLM adds them to a prompt): a ``transformers`` tokenizer returns ids, a ``tokenizers``
    one an ``Encoding``."""
    encoded = tokenizer.encode(text)
    ids = getattr(encoded, "ids", encoded)
    return len(ids)


@dataclass(frozen=True)
class Generated:
    """One text's result: the correction (None when skipped) and why it was skipped."""

    correction: str | None
    skipped: str | None = None


class VllmSpellchecker:
    """Batched greedy generation with vLLM's offline ``LLM`` API, Robotoff's settings."""

    name = ENGINE_NAME

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        quantization: str | None = DEFAULT_QUANTIZATION,
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        dtype: str = "auto",
        weights: str | None = None,
        vllm: Any = None,
    ) -> None:
        """``model`` names the model (Hugging Face id) and, with ``revision``, the predictor
        version; ``weights``, when given, is the local directory of that revision's staged
        files, which vLLM loads instead of asking the hub."""
        if vllm is None:
            import vllm  # heavy, GPU only: imported on use (tests pass vLLM's interface)

        logger.info(
            "loading %s (revision %s, quantization %s, max_model_len %d) with vLLM from %s",
            model,
            revision or "as found",
            quantization,
            max_model_len,
            weights or "the hub",
        )
        llm = vllm.LLM(
            model=weights or model,
            tokenizer=weights or model,
            revision=None if weights else revision,
            max_model_len=max_model_len,
            dtype=dtype,
            quantization=quantization,
        )
        sampling_params = vllm.SamplingParams(temperature=temperature, max_tokens=max_tokens)
        self._llm = llm
        self.sampling_params = sampling_params
        self.tokenizer = llm.get_tokenizer()
        self.model = model
        self.max_model_len = max_model_len
        self.version = predictor_version(model=model, revision=revision, quantization=quantization)

    def skip_reason(self, text: str) -> str | None:
        """Why ``text`` is not sent, or None. vLLM refuses a whole ``generate`` call when one
        prompt has ``max_model_len`` tokens or more (nothing left to generate): such a text is
        skipped, counted with the model's own tokenizer, prompt included."""
        n = token_count(self.tokenizer, build_prompt(text))
        if n >= self.max_model_len:
            return f"{SKIP_TOO_LONG}: {n} tokens >= max_model_len {self.max_model_len}"
        return None

    def generate(self, texts: Sequence[str]) -> list[Generated]:
        """One ``generate`` call for the batch; the raw generation is kept (Robotoff's
        ``output.outputs[0].text``). A generation cut by the context (``finish_reason``
        "length") is a truncated list, not a correction: skipped."""
        prompts = [build_prompt(t) for t in texts]
        outputs = self._llm.generate(prompts, self.sampling_params, use_tqdm=False)
        results: list[Generated] = []
        for output in outputs:
            completion = output.outputs[0]
            if getattr(completion, "finish_reason", None) == "length":
                n = len(getattr(completion, "token_ids", ()) or ())
                results.append(
                    Generated(None, f"{SKIP_TRUNCATED}: generation stopped at {n} tokens")
                )
            else:
                results.append(Generated(completion.text))
        return results

    def correct_batch(
        self, texts: Sequence[str | None], langs: Sequence[str | None] | None = None
    ) -> list[str | None]:
        """The engine interface: corrections only (skips become None). ``langs`` is unused
        (the model is multilingual). Empty and None texts are returned as they are."""
        todo = [i for i, t in enumerate(texts) if t and t.strip()]
        results: list[str | None] = list(texts)
        for i, generated in zip(todo, self.generate([texts[i] or "" for i in todo]), strict=True):
            results[i] = generated.correction
        return results
