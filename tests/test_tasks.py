"""The text task: clean windows, two-sided window shift, masking, and its losses."""

import numpy as np
import torch

from arprobe.tasks.text import IGNORE, TextLM


def task(lengths, width=14, C=8, S=3, mask_prob=0.0):
    tokens = torch.arange(len(lengths) * width).view(len(lengths), width) % 1000
    lengths = torch.tensor(lengths)
    tokens = torch.where(torch.arange(width)[None] < lengths[:, None], tokens, 0)
    starts = torch.clamp(lengths - C, 0, S)
    return TextLM(tokens, lengths, context_length=C, max_shift=S, mask_prob=mask_prob, mask_id=999,
                  window_start=starts)  # fmt: skip


def test_the_clean_window_is_the_document_for_eval():
    t = task([14, 9, 5])  # window starts: min(14 - 8, 3) = 3, min(9 - 8, 3) = 1, 0
    np.testing.assert_array_equal(t.eval_tokens[0], np.arange(3, 11))
    np.testing.assert_array_equal(t.eval_tokens[1], 14 + np.arange(1, 9))
    np.testing.assert_array_equal(t.eval_lengths, [8, 8, 5])


def test_window_shift_is_two_sided_and_stays_inside_the_document():
    t = task([14, 9, 5])
    g = torch.Generator().manual_seed(0)
    starts = {d: set() for d in range(3)}
    for _ in range(400):
        for d in range(3):
            batch = t.training_batch(d, g)
            first = int(batch["input_ids"][0, 0]) - 14 * d
            starts[d].add(first)
            real = (batch["labels"] != IGNORE).sum().item()
            assert real == min(8, [14, 9, 5][d] - first)
    # doc 0: clean start 3, s in [-3, 3] -> 0..6, all inside 14 tokens (14 - 8 = 6)
    assert starts[0] == set(range(0, 7))
    # doc 1 (9 tokens): 1 + s clipped to [0, 1]; doc 2 (shorter than C) never moves
    assert starts[1] == {0, 1} and starts[2] == {0}


def test_masking_replaces_inputs_not_labels():
    t = task([14], S=0, mask_prob=0.5)
    batch = t.training_batch(0, torch.Generator().manual_seed(1))
    hit = batch["input_ids"][0] == 999
    assert 0 < hit.sum() < 8
    np.testing.assert_array_equal(batch["labels"][0], np.arange(0, 8))
