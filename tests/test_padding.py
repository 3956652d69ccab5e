"""`pad_rows`: the one padding rule for training batches (right) and activation capture (right); left for generation."""

from __future__ import annotations

import pytest
import torch

from em_tasks.study.chat_encoding import pad_rows

CASES = {
    "right-pads-to-the-longest": ([[1, 2, 3], [4]], 0, "right", None, [[1, 2, 3], [4, 0, 0]], [[1, 1, 1], [1, 0, 0]]),
    "left-pads-to-the-longest": ([[1, 2, 3], [4]], 0, "left", None, [[1, 2, 3], [0, 0, 4]], [[1, 1, 1], [0, 0, 1]]),
    "labels-padded-with-ignore-index": ([[5], [6, 7]], -100, "right", None, [[5, -100], [6, 7]], [[1, 0], [1, 1]]),
    "equal-rows-are-untouched": ([[1, 2], [3, 4]], 9, "right", None, [[1, 2], [3, 4]], [[1, 1], [1, 1]]),
    "an-empty-row-is-all-padding": ([[], [1]], 0, "right", None, [[0], [1]], [[0], [1]]),
    "a-wider-width-pads-further": ([[1]], 0, "right", 3, [[1, 0, 0]], [[1, 0, 0]]),
    "no-rows": ([], 0, "right", None, [], []),
}


@pytest.mark.parametrize(("rows", "value", "side", "width", "ids", "mask"), CASES.values(), ids=CASES.keys())
def test_pad_rows(rows, value, side, width, ids, mask) -> None:
    got_ids, got_mask = pad_rows(rows, value, side, width)
    assert got_ids.dtype == got_mask.dtype == torch.long
    assert got_ids.shape == got_mask.shape == (len(rows), len(ids[0]) if ids else 0)
    assert got_ids.tolist() == ids and got_mask.tolist() == mask


def test_a_row_longer_than_the_width_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than the padded width 1"):
        pad_rows([[1, 2]], 0, width=1)
