"""Production GPU engine: Open Food Facts' fine-tuned Mistral-7B served by vLLM (offline, batched).

vllm is imported lazily in ``VllmSpellchecker.__init__`` so this module (and the prompt
builder) import without it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

ENGINE_NAME = "vllm-mistral-7b"
DEFAULT_MODEL = "openfoodfacts/spellcheck-mistral-7b"
PROMPT_PREFIX = "###Correct the list of ingredients:\n"
PROMPT_SUFFIX = "\n\n###Correction:\n"


def build_prompt(text: str) -> str:
    """The instruction prompt the model was fine-tuned on (Robotoff's, byte for byte)."""
    return PROMPT_PREFIX + text + PROMPT_SUFFIX


def max_tokens_for(text: str, *, floor: int = 64, ceiling: int = 4096) -> int:
    """Generation budget sized from the input: a correction is about as long as the text.

    Uses a conservative 1 token per 2 characters plus 20 % headroom, within [floor, ceiling].
    """
    return max(floor, min(ceiling, int(len(text) / 2 * 1.2) + 16))


class VllmSpellchecker:
    """Batched greedy generation with vLLM's offline ``LLM`` API."""

    name = ENGINE_NAME

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        max_model_len: int = 8192,
        gpu_memory_utilization: float = 0.9,
        dtype: str = "auto",
    ) -> None:
        from vllm import LLM, SamplingParams  # heavy, GPU only: imported on use

        self._sampling_params_cls: Any = SamplingParams
        logger.info("loading %s with vLLM", model)
        self._llm: Any = LLM(
            model=model,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
        )
        self.model = model

    def correct_batch(
        self, texts: Sequence[str | None], langs: Sequence[str | None] | None = None
    ) -> list[str | None]:
        """Correct a batch of texts in one vLLM call (greedy, temperature 0).

        ``langs`` is accepted for the engine interface and unused (the model is multilingual).
        Empty and None texts are returned as they are without a model call.
        """
        todo = [i for i, t in enumerate(texts) if t and t.strip()]
        results: list[str | None] = list(texts)
        if not todo:
            return results
        prompts = [build_prompt(texts[i] or "") for i in todo]
        params = [
            self._sampling_params_cls(temperature=0.0, max_tokens=max_tokens_for(texts[i] or ""))
            for i in todo
        ]
        outputs = self._llm.generate(prompts, params, use_tqdm=False)
        for i, output in zip(todo, outputs, strict=True):
            correction = output.outputs[0].text.strip()
            # An empty generation is not a correction: keep the original text.
            results[i] = correction or texts[i]
        return results
