import pytest
import torch

from pareto_ray.config import DataConfig
from pareto_ray.data import load_dataset
from pareto_ray.data.multimnist import LAYOUTS, build_dataset, compose, torchvision_source


def _digit(value: int) -> torch.Tensor:
    return torch.full((1, 28, 28), value, dtype=torch.uint8)


def test_compose_two_tasks_layout():
    a, b = _digit(100), _digit(200)
    canvas_size, corners = LAYOUTS[2]
    assert canvas_size == 36 and corners == [(0, 0), (6, 6)]
    out = compose([a, b])
    assert out.shape == (1, 1, 28, 28)
    # top-left corner holds only digit a, bottom-right only digit b, the overlap the max
    assert out[0, 0, 0, 0] == 100 and out[0, 0, 25, 25] == 200 and out[0, 0, 14, 14] == 200
    assert out[0, 0, -1, -1] == 0  # the canvas border beyond both digits


def test_compose_three_tasks_layout():
    canvas_size, corners = LAYOUTS[3]
    assert canvas_size == 42 and corners == [(0, 0), (0, 14), (14, 7)]
    out = compose([_digit(50), _digit(100), _digit(150)])
    assert out[0, 0, 0, 0] == 50 and out[0, 0, 0, -1] == 100 and out[0, 0, -1, 14] == 150
    # bottom corners are empty canvas
    assert out[0, 0, -1, 0] == 0 and out[0, 0, -1, -1] == 0


def test_multidigits_deterministic_and_cached(tmp_path):
    cfg = DataConfig(dataset="multidigits", num_tasks=2, cache_dir=str(tmp_path))
    first = load_dataset(cfg)
    assert len(list(tmp_path.glob("*.parquet"))) == 1
    again = load_dataset(cfg)  # from the Parquet cache
    fresh = build_dataset(cfg)  # rebuilt from scratch
    for name in ("train", "val", "test"):
        a, b, c = first.split(name), again.split(name), fresh.split(name)
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.images, c.images) and torch.equal(a.labels, c.labels)
    assert first.train.images.shape[1:] == (1, 28, 28)
    assert first.train.labels.shape[1] == 2 and first.train.labels.max() <= 9
    n_source = 1797 - round(1797 * 0.2)
    assert len(first.train) + len(first.val) == n_source


def test_seed_changes_pairing_and_limits_trim(tmp_path):
    a = load_dataset(DataConfig(seed=0, cache_dir=str(tmp_path)))
    b = load_dataset(DataConfig(seed=1, cache_dir=str(tmp_path)))
    assert not torch.equal(a.train.labels[:50], b.train.labels[:50])
    small = load_dataset(DataConfig(seed=0, cache_dir=str(tmp_path), max_train=10, max_eval=5))
    assert (len(small.train), len(small.val), len(small.test)) == (10, 5, 5)
    assert torch.equal(small.train.labels, a.train.labels[:10])


def test_inputs_normalized():
    ds = load_dataset(DataConfig(max_train=64, max_eval=8))
    x = ds.train.inputs()
    assert x.dtype == torch.float32 and x.shape == (64, 1, 28, 28)
    assert x.min() < 0 < x.max()


def test_missing_root_names_files_and_download_option(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*download=true"):
        torchvision_source("MNIST", str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match="data.root is not set"):
        load_dataset(DataConfig(dataset="multimnist", cache_dir=str(tmp_path)))


@pytest.mark.parametrize("dataset", ["multimnist", "multifashion", "multi_fashion_mnist"])
def test_torchvision_variants_from_shared_data(dataset, shared_data, tmp_path):
    ds = load_dataset(DataConfig(dataset=dataset, num_tasks=3, root=str(shared_data), cache_dir=str(tmp_path)))
    assert ds.train.labels.shape[1] == 3 and len(ds.test) > 0
    assert len(ds.val) == pytest.approx(0.1 * (len(ds.train) + len(ds.val)), abs=1)
