import pytest

from pareto_ray.cli import main
from pareto_ray.config import ConfigError, load_config


def test_bad_value_names_field_and_range(capsys):
    assert main(["train", "--config", "jobs/configs/quickstart.yaml", "--set", "method.rank=0"]) == 2
    err = capsys.readouterr().out
    assert "method.palora.rank" in err and "greater than or equal to 1" in err


def test_unknown_key_and_missing_file(capsys):
    assert main(["train", "--set", "train.epoch=3"]) == 2
    assert "train.epoch" in capsys.readouterr().out
    assert main(["train", "--config", "nope.yaml"]) == 2
    assert "config file not found" in capsys.readouterr().out


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().out


@pytest.mark.parametrize("path", ["quickstart", "multimnist_palora", "multimnist_ls", "multifashion_palora",
                                  "multifashion_ls"])
def test_shipped_configs_validate(path):
    cfg = load_config(f"jobs/configs/{path}.yaml")
    assert cfg.train.batch_size % cfg.ray.num_workers == 0


def test_paper_settings_in_multimnist_config():
    cfg = load_config("jobs/configs/multimnist_palora.yaml")
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.optimizer) == (10, 256, 1e-3, "adam")
    assert (cfg.method.rank, cfg.method.alpha, cfg.method.rays_per_step, cfg.method.temperature) == (1, 1.0, 5, 5.0)
    assert cfg.model.backbone == "lenet"


def test_overrides_are_yaml_typed():
    cfg = load_config(None, ["train.lr=0.01", "method.target_modules=[encoder.0]", "name=x"])
    assert cfg.train.lr == 0.01 and cfg.method.target_modules == ["encoder.0"] and cfg.name == "x"
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["novalue"])
