"""Which rows of the input one Cloud Batch task processes."""

from __future__ import annotations


def shard_range(num_rows: int, task_index: int, task_count: int) -> tuple[int, int]:
    """Return the contiguous row range ``[start, stop)`` of task ``task_index`` of ``task_count``.

    Ranges of all tasks are disjoint, cover ``[0, num_rows)`` exactly and differ in size by at
    most one row; a task beyond the rows gets an empty range.
    """
    if task_count < 1:
        raise ValueError(f"BATCH_TASK_COUNT must be >= 1, got {task_count}")
    if not 0 <= task_index < task_count:
        raise ValueError(f"BATCH_TASK_INDEX must be in [0, {task_count}), got {task_index}")
    start = task_index * num_rows // task_count
    stop = (task_index + 1) * num_rows // task_count
    return start, stop
