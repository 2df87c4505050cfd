import numpy as np
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


# --- the papers' composition (PaMaL/PaLoRA's multimnist.py, multimnist3digits.py) ---------------------------

def _paper(tmp_path, **fields) -> DataConfig:
    base = {"composition": "paper", "train_composites": 300, "val_composites": 50, "test_composites": 100,
            "normalize": "none", "cache_dir": str(tmp_path)}
    return DataConfig(**{**base, **fields})


def test_paper_composition_counts_float_range_and_determinism(tmp_path):
    ds = load_dataset(_paper(tmp_path))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (250, 50, 100)
    x = ds.train.inputs()
    assert x.dtype == torch.float32 and x.shape == (250, 1, 28, 28)
    assert x.min() < 0 and x.max() > 1  # bicubic over- and undershoot, never clamped
    assert not torch.equal(x * 255, (x * 255).round())  # never rounded to uint8
    again = load_dataset(_paper(tmp_path))  # from the cache of canvases
    assert torch.equal(again.train.inputs(), x) and torch.equal(again.test.labels, ds.test.labels)
    other = load_dataset(_paper(tmp_path, seed=1))
    assert not torch.equal(other.train.labels, ds.train.labels)
    normalized = load_dataset(_paper(tmp_path, normalize="mnist"))
    assert torch.allclose(normalized.train.inputs(), (x - 0.1307) / 0.3081)
    small = load_dataset(_paper(tmp_path, max_train=20, max_eval=7))
    assert (len(small.train), len(small.val), len(small.test)) == (20, 7, 7)


def test_paper_draw_is_with_replacement_and_distinct_within_a_composite():
    from pareto_ray.data.multimnist import draw_indices

    idx = draw_indices([10, 10], [0, 0], 2000, np.random.default_rng(0))
    assert (idx[:, 0] != idx[:, 1]).all()  # left ≠ right, as the papers' code redraws
    assert set(np.unique(idx)) == set(range(10))  # over the whole source split
    assert len({tuple(r) for r in idx}) < len(idx)  # pairs repeat: drawn with replacement
    other_sources = draw_indices([3, 3], [0, 1], 500, np.random.default_rng(0))
    assert (other_sources[:, 0] == other_sources[:, 1]).any()  # no constraint across different sources
    three = draw_indices([5, 5, 5], [0, 0, 0], 500, np.random.default_rng(0))
    assert all(len(set(r)) == 3 for r in three.tolist())


def test_paper_resize_is_pil_bicubic_on_floats_and_bilinear_for_three_tasks():
    from PIL import Image
    from torchvision.transforms.functional import InterpolationMode, resize

    from pareto_ray.data.multimnist import paper_resize

    canvases = torch.randint(0, 256, (6, 1, 36, 36), dtype=torch.uint8)
    ours = paper_resize(canvases, 2)[:, 0].numpy()
    pil = np.stack([np.asarray(Image.fromarray(c[0].numpy().astype(np.float32) / 255, mode="F").resize((28, 28)))
                    for c in canvases])  # PIL's default for float images: bicubic, as the papers' code calls it
    assert np.abs(ours - pil).max() < 1e-5
    three = torch.randint(0, 256, (4, 1, 42, 42), dtype=torch.uint8)
    want = resize(three.float() / 255, [28, 28], InterpolationMode.BILINEAR, antialias=False)
    assert torch.allclose(paper_resize(three, 3), want, atol=1e-6)  # inputs in [0, 1]: an absolute bound is relative


def test_paper_three_task_layout_follows_the_code_order():
    from pareto_ray.data.multimnist import PAPER_LAYOUTS, canvas

    out = canvas([_digit(50)[0], _digit(100)[0], _digit(150)[0]], PAPER_LAYOUTS[3])
    assert out[0, 0, 0] == 50 and out[0, -1, 21] == 100 and out[0, 0, -1] == 150  # top-left, bottom-centre, top-right


def test_composition_specific_fields_are_refused_with_the_rule():
    from pareto_ray.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"data.copies.*composite counts rule"):
        load_config(None, ["data.composition=paper", "data.copies=7"])
    with pytest.raises(ConfigError, match=r"data.val_fraction"):
        load_config(None, ["data.composition=paper", "data.val_fraction=0.2"])
    with pytest.raises(ConfigError, match=r"data.train_composites.*data.composition=permuted"):
        load_config(None, ["data.train_composites=100"])
    with pytest.raises(ConfigError, match=r"must be below data.train_composites"):
        load_config(None, ["data.composition=paper", "data.train_composites=100", "data.val_composites=100"])
    cfg = load_config(None, ["data.composition=paper"])  # a checkpoint's config.json reloads unchanged
    assert type(cfg).model_validate_json(cfg.model_dump_json()) == cfg
