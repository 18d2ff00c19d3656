"""Document orders (arprobe.trainer.schedules)."""

import numpy as np
import pytest

from arprobe.errors import UserError
from arprobe.trainer.schedules import make_schedule


def epochs_of(doc, epoch):
    return [doc[epoch == e] for e in range(1, epoch.max() + 1)]


def test_cyclic_repeats_the_same_order():
    doc, epoch = make_schedule("cyclic", 4, 3, seed=0)
    np.testing.assert_array_equal(doc, [0, 1, 2, 3] * 3)
    np.testing.assert_array_equal(epoch, [1] * 4 + [2] * 4 + [3] * 4)


def test_shuffle_keeps_document_one_first_and_reshuffles_the_rest():
    doc, epoch = make_schedule("shuffle", 8, 6, seed=1)
    orders = epochs_of(doc, epoch)
    assert all(o[0] == 0 and sorted(o) == list(range(8)) for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # not the same order every epoch
    again, _ = make_schedule("shuffle", 8, 6, seed=1)
    other, _ = make_schedule("shuffle", 8, 6, seed=2)
    np.testing.assert_array_equal(doc, again)
    assert not np.array_equal(doc, other)


def test_partial_shuffle_moves_only_documents_two_to_n():
    doc, epoch = make_schedule("partial-shuffle", 10, 8, seed=0, shuffle_until=5)
    for order in epochs_of(doc, epoch):
        assert order[0] == 0
        assert sorted(order[1:5]) == [1, 2, 3, 4]
        np.testing.assert_array_equal(order[5:], [5, 6, 7, 8, 9])
    assert len({tuple(o) for o in epochs_of(doc, epoch)}) > 1


def test_insert_repeats_a_block_and_uses_one_off_documents_once():
    doc, epoch = make_schedule("insert", 30, 4, seed=0, repeat_docs=5, insert_min=2, insert_max=4)
    orders = epochs_of(doc, epoch)
    for order in orders:
        np.testing.assert_array_equal(order[:5], np.arange(5))
        assert 2 <= len(order) - 5 <= 4
    one_offs = np.concatenate([o[5:] for o in orders])
    assert len(set(one_offs)) == len(one_offs) and one_offs.min() >= 5


def test_schedule_errors_are_one_sentence():
    with pytest.raises(
        UserError, match=r"needs \d+ one-off documents .* raise data.n_docs \(T\) to at least 25"
    ):
        make_schedule("insert", 10, 5, seed=0, repeat_docs=5, insert_min=4, insert_max=4)
    with pytest.raises(UserError, match=r"shuffle_until \(N\) must be in \[2, T=6\]"):
        make_schedule("partial-shuffle", 6, 2, seed=0, shuffle_until=9)
