"""Heat-map axes mark the stored epoch ends (the figure helpers), in an order whose epochs differ
in length."""

import numpy as np
import pytest

from tests.helpers import INSERT_DOC, INSERT_EPOCH


def test_heat_map_axes_mark_the_stored_epoch_ends():
    from arprobe.probes.base import epoch_extent, mark_epochs, new_figure
    from arprobe.science.schedule import Schedule

    schedule = Schedule(np.array(INSERT_DOC), np.array(INSERT_EPOCH), 8)
    fig, (ax,) = new_figure()
    mark_epochs(ax, schedule, -0.5, 14.5, axes="xy")
    assert ax.get_xticks().tolist() == [0, 5, 9, 14] and ax.get_yticks().tolist() == [0, 5, 9, 14]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
    vertical = [line.get_xdata()[0] for line in ax.lines if line.get_xdata()[0] == line.get_xdata()[1]]
    assert sorted(vertical) == [5, 9]  # lines between epochs; the run ends at 14
    # rows after episodes 5..9 (epoch 2, 4 episodes long): edges 4.5 and 9.5 in epochs 0.9 and 2.1
    assert epoch_extent(np.arange(5, 10), schedule) == pytest.approx((0.9, 2.1))
