"""Build the CPU engine's per-language indexes of the general word lists (``word_index``), as
the image does once at build time: ``python -m spellcheck_job.build_indexes``.

Beside both modules it uses: ``wordfreq_cpu`` reads the indexes ``word_index`` writes, so the
command that fills them with ``wordfreq_cpu``'s settings lives above the two.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spellcheck_job.wordfreq_cpu import prebuilt_lists


def main(argv: list[str] | None = None) -> int:
    """Build every language's index of the shipped (or given) word lists."""
    parser = argparse.ArgumentParser(description="Build the CPU engine's per-language indexes.")
    parser.add_argument("--wordlist", type=Path, default=None)
    args = parser.parse_args(argv)
    prebuilt, common, langs = prebuilt_lists(args.wordlist)
    for lang in langs:
        prebuilt(lang)
    print(f"indexed {len(langs)} languages, {len(common)} common words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
