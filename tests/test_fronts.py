"""Front plots: the whole title is on the image."""

import matplotlib.figure
import numpy as np
import pyarrow as pa
import pytest

from pareto_ray.fronts import plot_front


def _front(tasks: int) -> pa.Table:
    rays = np.eye(tasks)
    cols = {f"ray_{i + 1}": rays[:, i] for i in range(tasks)}
    cols |= {f"acc_{i + 1}": 0.8 + 0.1 * rays[:, i] for i in range(tasks)}
    cols |= {f"loss_{i + 1}": 1.0 - rays[:, i] for i in range(tasks)}
    return pa.table(cols)


@pytest.mark.parametrize("tasks", [2, 3])
def test_a_long_title_is_wrapped_not_clipped(tmp_path, monkeypatch, tasks):
    saved = []
    save = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):  # where the title lands, measured as the PNG is written
        renderer = fig.canvas.get_renderer()
        saved.append((fig.axes[0].title.get_window_extent(renderer), fig.bbox))
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    # the title evaluate gives a front: run name (method-dataset-timestamp), method, dataset, split
    title = "palora-multifashion-20261201-095931: palora on multi_fashion_mnist (test)"
    assert plot_front(_front(tasks), tmp_path / "front.png", title).is_file()
    (extent, figure), = saved
    assert extent.x0 >= figure.x0 and extent.x1 <= figure.x1 and extent.y1 <= figure.y1, (extent, figure)
    assert extent.width > 0
