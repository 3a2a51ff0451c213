"""The rank runner's scatter plots stay readable for any score scale: x tick labels never overlap."""

import numpy as np
import pytest

from vit_space.scoring.ranking import scatter_figure


@pytest.mark.parametrize("scale,offset", [(1.0, 0.0), (3e9, 0.0), (1e12, 5e13), (1e-6, 0.0), (-4e7, 0.0),
                                          (2e3, 5e5), (3e5, 1e5)])  # the last two overlapped before
def test_x_tick_labels_do_not_overlap(scale, offset):
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(0)
    scores = offset + scale * rng.random(40)
    acc = list(60 + 10 * rng.random(40))
    fig = scatter_figure("a proxy", scores, acc, "c100_kd_acc", {"kendall": 0.5})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = sorted((label.get_window_extent(renderer) for label in ax.get_xticklabels()
                    if label.get_text() and label.get_visible()), key=lambda b: b.x0)
    assert len(boxes) >= 2
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 <= right.x0, [label.get_text() for label in ax.get_xticklabels()]
    plt.close(fig)
