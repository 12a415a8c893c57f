"""The copy's text checks (predictions/arrow_copy.py): a NUL byte found by one scan of the
column's value buffer, only within the bytes the (possibly sliced) column spans."""

from __future__ import annotations

import pyarrow as pa

from robotoff_batch.predictions.arrow_copy import _invalid_text

NUL = "a NUL byte"


def test_a_nul_byte_is_found_in_its_row() -> None:
    column = pa.array(["ab", None, "c\x00d", "ef", "\x00"])
    assert _invalid_text(column) == [(2, NUL), (4, NUL)]


def test_a_slice_sees_only_its_own_bytes() -> None:
    column = pa.array(["\x00x", "ab", "cd", "e\x00"])
    assert _invalid_text(column.slice(1, 2)) == []  # the NULs lie outside the slice
    assert _invalid_text(column.slice(2)) == [(1, NUL)]
    assert _invalid_text(column.slice(0, 1)) == [(0, NUL)]


def test_nulls_empty_and_clean_columns_hold_none() -> None:
    assert _invalid_text(pa.array([None, None], pa.string())) == []
    assert _invalid_text(pa.array([], pa.string())) == []
    assert _invalid_text(pa.array(["", "sucre, farine"])) == []
