"""What ``robotoff-batch smoke ingredients-spellcheck`` checks inside the vLLM image on the first
real GPU VM: everything the tests here cannot (no GPU, no vLLM on their machines).

Run as ``python3 -m spellcheck_job.gpu_check`` with the job's environment (the pinned
revision, the staged weights' URI, ``HF_HUB_OFFLINE=1``). Prints one JSON line (the report)
and exits 0 when every check passed, 12 otherwise. Checks:

1. versions: vLLM is Robotoff's 0.22.0, torch sees a CUDA device, the driver (>= 580 for the
   CUDA 13 wheels) and the GPU's compute capability (>= 8.9 for FP8: L4, H100);
2. the hub is off (``HF_HUB_OFFLINE=1``) and the staged weights of the pinned revision are
   copied and loaded from local disk with Robotoff's settings (fp8, max_model_len 1024): the
   local copy's ``STAGED.json`` names the pinned revision, and the hub's cache holds no copy
   of the model (nothing was downloaded);
3. the length guard counts with the model's own tokenizer: a 20,000-character text is
   skipped, not sent (vLLM would reject the whole call);
4. generation: Robotoff's prompt and greedy sampling correct a known typo, finish with
   ``stop`` (not truncated), and the texts/s of one 64-text batch is reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from spellcheck_job.main import DEFAULT_WEIGHTS_DIR, correct_chunk, load_engine, parse_config

GPU_CHECK_FAILED_EXIT_CODE = 12
EXPECTED_VLLM = "0.22.0"
MIN_DRIVER_MAJOR = 580
MIN_FP8_CAPABILITY = (8, 9)
TYPO_TEXT = "farine de blé, sucre, huile de tournesol, sell, levure chimiqe"
SAMPLE_TEXTS = [
    "sucre, farine de blé, beurre pâtissier, oeufs frais, sel",
    "eau, jus de citron à base de concentré, arôme naturel de citron",
    "sugar, wheat flour, palm oil, cocoa powder, emulsifier: soy lecithin",
    "Zucker, Weizenmehl, Palmfett, Kakaopulver, Emulgator: Lecithine",
]


def _driver_major() -> int | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    try:
        return int(out.strip().splitlines()[0].split(".")[0])
    except (ValueError, IndexError):
        return None


def _staged_revision(marker: Path) -> str | None:
    """The revision the local copy's STAGED.json names (None when there is none)."""
    try:
        return str(json.loads(marker.read_text()).get("revision"))
    except (OSError, ValueError, AttributeError):
        return None


def _hub_cache(env: dict[str, str]) -> Path:
    """Where huggingface_hub would have cached a download (HF_HUB_CACHE, HF_HOME/hub)."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    home = env.get("HF_HOME") or str(Path(env.get("HOME", "/root")) / ".cache" / "huggingface")
    return Path(home) / "hub"


def run_checks(env: dict[str, str]) -> dict[str, Any]:
    """The report: each check's outcome and the figures measured."""
    report: dict[str, Any] = {"checks": {}, "failed": []}

    def check(name: str, ok: bool, detail: Any) -> None:
        report["checks"][name] = {"ok": bool(ok), "detail": detail}
        if not ok:
            report["failed"].append(name)

    import torch
    import vllm

    check("vllm version", vllm.__version__ == EXPECTED_VLLM, vllm.__version__)
    cuda = torch.cuda.is_available()
    check("cuda visible to torch", cuda, f"torch {torch.__version__}, cuda {torch.version.cuda}")
    if cuda:
        capability = torch.cuda.get_device_capability(0)
        check(
            "fp8 capable gpu",
            tuple(capability) >= MIN_FP8_CAPABILITY,
            f"{torch.cuda.get_device_name(0)} sm_{capability[0]}{capability[1]}",
        )
    driver = _driver_major()
    check("driver >= 580", driver is not None and driver >= MIN_DRIVER_MAJOR, driver)
    check("hub off", env.get("HF_HUB_OFFLINE") == "1", env.get("HF_HUB_OFFLINE"))
    check(
        "pinned weights",
        bool(env.get("SPELLCHECK_WEIGHTS_URI")) and bool(env.get("SPELLCHECK_MODEL_REVISION")),
        env.get("SPELLCHECK_WEIGHTS_URI"),
    )
    if report["failed"]:
        return report

    # the engine's settings as a task resolves them; the check reads and writes no job file
    config = parse_config(
        ["--engine", "vllm"], {"INPUT_FILE_PATH": "-", "OUTPUT_FILE_PATH": "-", **env}
    )
    began = time.monotonic()
    engine = load_engine(config)  # copies the staged weights, loads them with fp8
    report["load_s"] = round(time.monotonic() - began, 1)
    report["predictor_version"] = getattr(engine, "version", None)
    check("loaded with fp8", config.quantization == "fp8", config.quantization)
    revision = env.get("SPELLCHECK_MODEL_REVISION", "")
    local = Path(config.weights_dir or DEFAULT_WEIGHTS_DIR)
    staged = _staged_revision(local / "STAGED.json")
    check("weights from the staged copy of the pinned revision", staged == revision, staged)
    cached = _hub_cache(env) / ("models--" + config.model.replace("/", "--"))
    check("nothing downloaded from the hub", not cached.exists(), str(cached))
    long_text = ("farine de blé, " * 1400)[:20_000]
    texts: list[str | None] = [TYPO_TEXT, long_text, *SAMPLE_TEXTS]
    result = correct_chunk(engine, texts, ["fr"] * len(texts), batch_size=len(texts))
    check(
        "long text skipped by the model's tokenizer",
        (result.skipped[1] or "").startswith("too_long"),
        result.skipped[1],
    )
    correction = result.corrections[0]
    check(
        "typo corrected, not truncated",
        result.skipped[0] is None and bool(correction) and correction != TYPO_TEXT,
        correction,
    )
    batch = [SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)] + f" {i}" for i in range(64)]
    began = time.monotonic()
    timed = correct_chunk(engine, batch, ["fr"] * len(batch), batch_size=len(batch))
    elapsed = time.monotonic() - began
    report["texts_per_s"] = round(len(batch) / elapsed, 1) if elapsed else None
    check("a batch of 64 generated", sum(1 for s in timed.skipped if s) == 0, timed.counts())
    return report


def main() -> int:
    env = dict(os.environ)
    try:
        report = run_checks(env)
    except Exception as exc:  # noqa: BLE001 - the smoke report says what broke
        report = {"failed": ["exception"], "error": f"{type(exc).__name__}: {exc}"[:2000]}
    print(json.dumps(report, default=str), flush=True)
    return 0 if not report["failed"] else GPU_CHECK_FAILED_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
