"""The streaming path (data.streaming): the training split as Parquet shards read by Ray Data.

The shards hold exactly the training split the in-memory path trains on; a
streamed epoch on 2 Ray Train workers trains each sample at most once (Ray
Train's equal split and each worker's last incomplete batch drop the rest);
a streamed run killed mid-epoch resumes with its epoch count intact.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import tiny_overrides
from mlflow.tracking import MlflowClient
from tolerance import assert_close

from pareto_ray.checkpoint import read_state
from pareto_ray.config import DataConfig, RayConfig, load_config
from pareto_ray.data import decode_rows, load_dataset, streams, table_meta, train_shards
from pareto_ray.runtime import ResourceError, room_for_data


@pytest.fixture
def cache(tmp_path: Path) -> str:
    return str(tmp_path / "cache")


def _shard_split(cfg: DataConfig):
    folder, rows = train_shards(cfg)
    meta = table_meta(pq.ParquetFile(next(folder.glob("*.parquet"))).schema_arrow)
    return folder, rows, decode_rows(pq.read_table(folder), cfg, meta), pq.read_table(folder).column("index")


@pytest.mark.parametrize("extra", [{}, {"composition": "paper", "train_composites": 1200, "val_composites": 200,
                                        "test_composites": 100, "normalize": "none"}], ids=["permuted", "paper"])
def test_shards_hold_the_training_split_as_the_in_memory_path_prepares_it(cache, extra):
    cfg = DataConfig(dataset="multidigits", cache_dir=cache, max_train=700, shard_rows=256, **extra)
    folder, rows, split, index = _shard_split(cfg)
    memory = load_dataset(cfg).train
    assert rows == len(memory) == 700
    assert len(list(folder.glob("part-*.parquet"))) == 3  # 256 + 256 + 188 rows
    assert index.to_pylist() == list(range(700))
    assert_close(split.inputs(), memory.inputs())  # the paper composition's resize too (its prepare)
    for got, want in zip(split.targets, memory.targets):
        assert torch.equal(got, want)
    assert train_shards(cfg) == (folder, rows)  # written once


def test_workers_of_a_streamed_run_read_validation_and_test_only(cache):
    cfg = DataConfig(dataset="multidigits", cache_dir=cache)
    full, heldout = load_dataset(cfg), load_dataset(cfg, train=False)
    assert len(heldout.train) == 0 and heldout.input_shape == full.input_shape
    assert torch.equal(heldout.val.inputs(), full.val.inputs()) and torch.equal(heldout.test.x, full.test.x)


def test_streaming_auto_by_size_and_refused_without_a_cache(cache):
    assert not streams(DataConfig(dataset="multidigits", cache_dir=cache))  # a few MB: in memory
    assert streams(DataConfig(dataset="multidigits", cache_dir=cache, stream_above_mb=0.01))
    assert not streams(DataConfig(dataset="multidigits", cache_dir=cache, stream_above_mb=0.01, streaming=False))
    with pytest.raises(ValueError, match="data.cache=true"):
        streams(DataConfig(factory="pareto_ray.data.factory:example", streaming=True))


def test_a_streamed_run_leaves_cpus_to_ray_data(ray_session):
    cpus = ray_session.cluster_resources()["CPU"]
    workers = int(cpus)  # as many 1-CPU workers as CPUs: nothing left for Ray Data's tasks
    lowered = room_for_data(RayConfig(num_workers=workers))
    assert lowered.cpus_per_worker * workers + 1.0 <= cpus + 1e-9
    assert room_for_data(RayConfig(num_workers=1, cpus_per_worker=0.5)).cpus_per_worker == 0.5  # room already
    with pytest.raises(ResourceError, match="ray.data_cpus=1 CPU.*lower ray.cpus_per_worker"):
        room_for_data(RayConfig(num_workers=workers, cpus_per_worker=1.0))  # set: not overridden


def _record_indices(config: dict) -> None:
    """A Ray Train loop that reads its shard as the training worker does and writes the rows it got per epoch."""
    import ray.train

    from pareto_ray.training.streaming import epoch_batches, steps_per_epoch

    rank = ray.train.get_context().get_world_rank()
    shard = ray.train.get_dataset_shard("train")
    steps = steps_per_epoch(config["rows"], config["batch"], 2)
    for epoch in range(2):
        seen, count = [], 0
        for x, targets, index in epoch_batches(shard, config["batch"], 2, epoch, 0, "cpu", 2, with_index=True):
            assert x.dtype == torch.float32 and x.shape == (config["batch"] // 2, 1, 28, 28)
            assert targets[0].shape == (config["batch"] // 2,)
            seen += index.tolist()
            count += 1
        Path(config["out"], f"{epoch}-{rank}.json").write_text(json.dumps({"index": seen, "steps": count,
                                                                           "expected": steps}))
        ray.train.report({"epoch": epoch})


@pytest.mark.slow
def test_a_streamed_epoch_trains_each_sample_at_most_once_across_two_workers(ray_session, tmp_path):
    from ray.train import DataConfig as RayDataConfig
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pareto_ray.training.streaming import train_dataset

    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # _record_indices, for the workers
    rows_wanted, batch = 301, 32  # 301 rows over 2 workers: 1 left over, then 150 each = 9 batches of 16 + 6
    cfg = DataConfig(dataset="multidigits", cache_dir=str(tmp_path / "cache"), max_train=rows_wanted, shard_rows=64)
    dataset, rows = train_dataset(cfg)
    assert rows == rows_wanted
    TorchTrainer(_record_indices, train_loop_config={"rows": rows, "batch": batch, "out": str(tmp_path)},
                 scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                 datasets={"train": dataset}, dataset_config=RayDataConfig(datasets_to_split=["train"]),
                 run_config=RunConfig(name="stream-indices", storage_path=str(tmp_path / "ray"))).fit()
    epochs = []
    for epoch in range(2):
        parts = [json.loads((tmp_path / f"{epoch}-{rank}.json").read_text()) for rank in range(2)]
        assert [p["steps"] for p in parts] == [9, 9] == [p["expected"] for p in parts]  # same steps on each worker
        seen = parts[0]["index"] + parts[1]["index"]
        assert len(seen) == 2 * 9 * 16 and len(set(seen)) == len(seen), "a sample trained twice in one epoch"
        assert set(seen) <= set(range(rows))
        epochs.append(parts[0]["index"])
    assert epochs[0] != epochs[1], "every epoch read in the same order"


@pytest.mark.slow
def test_a_streamed_run_killed_mid_epoch_resumes_its_epoch_count(ray_session, tmp_path, mlflow_uri, monkeypatch,
                                                                 capfd):
    from pareto_ray.training import fit
    from pareto_ray.training.worker import FAIL_AT_ENV

    # 512 rows / batch 64 = 8 steps per epoch on either path: rank 1 dies after step 5 of epoch 1, once.
    monkeypatch.setenv(FAIL_AT_ENV, "1:5:1")
    cfg = load_config(None, tiny_overrides(tmp_path, mlflow_uri, name="stream-kill", **{
        "data.streaming": "true", "data.cache_dir": str(tmp_path / "cache"), "ray.max_failures": 1}))
    result = fit(cfg)
    assert (tmp_path / "ray_results" / "stream-kill" / ".fail_at_1_5_1").exists(), "the worker was never killed"
    client = MlflowClient(mlflow_uri)
    for key in ("val_hv", "train_loss"):
        assert sorted(m.step for m in client.get_metric_history(result.run_id, key)) == [0, 1]
    assert read_state(result.checkpoint)["epoch"] == 1
    assert client.get_run(result.run_id).info.status == "FINISHED"
    assert result.test_hv > 0
