"""Run configuration: YAML files validated by pydantic.

Every section forbids unknown keys, so a typo is an error that names the
field; ranges are declared on the fields, so a bad value's error names the
allowed range.  ``--set a.b=value`` overrides are applied before validation.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, model_validator

from pareto_ray.methods import METHODS, PaLoRAConfig
from pareto_ray.schema import ConfigError, Section, describe_errors
from pareto_ray.search_space import TuneConfig, check_space

__all__ = ["Config", "ConfigError", "DataConfig", "EvalConfig", "MlflowConfig", "ModelConfig", "RayConfig",
           "TrainConfig", "apply_overrides", "load_config", "parse_config"]


#: The MultiMNIST family (``data.num_tasks`` digits per composite) and its composition fields with their defaults.
MULTIMNIST_DATASETS = ("multidigits", "multimnist", "multifashion", "multi_fashion_mnist")
MULTIMNIST_FIELDS: dict[str, Any] = {"num_tasks": 2, "composition": "permuted", "normalize": "mnist", "val_fraction": None,
                                     "copies": None, "train_composites": None, "val_composites": None,
                                     "test_composites": None}
#: The datasets whose tasks ``data.tasks`` picks, the Census tasks (PaMaL's ``census.py``), and the datasets
#: ``data.image_size`` resizes.
TASK_CHOICE = ("census", "celeba")
CENSUS_TASKS = ("income", "age", "education", "never_married")
RESIZABLE = ("utkface", "celeba", "cityscapes", "nyuv2")


class DataConfig(Section):
    """The ``data:`` section.

    ``composition`` says how MultiMNIST-style composites are built from the source digits:

    * ``permuted`` — every source image is used ``copies`` times, paired by random permutations, and
      ``val_fraction`` of the source training images are held out for validation (pareto-ray's own);
    * ``paper`` — as the PaMaL/PaLoRA code builds them: ``train_composites`` pairs drawn with replacement
      (distinct indices within a composite) from the source training split, of which ``val_composites``
      are drawn at random for validation, and ``test_composites`` from the source test split.

    ``data.seed`` fixes the composition (the papers build one dataset and keep it for every training seed).
    """

    dataset: Literal["multidigits", "multimnist", "multifashion", "multi_fashion_mnist", "census", "utkface", "celeba",
                     "cifar100", "cityscapes", "nyuv2", "sarcos"] = "multidigits"
    num_tasks: Literal[2, 3] = Field(default=2, description="MultiMNIST family only: digits per composite image (tasks)")
    root: str | None = Field(default=None, description="folder holding the dataset's published files (docs/datasets.md "
                                                       "gives each dataset's layout)")
    download: bool = Field(default=False, description="download missing files into root where a public URL exists "
                                                      "(torchvision's MNIST, CIFAR-100, CelebA; UCI Census; SARCOS)")
    tasks: list[str] | None = Field(default=None, min_length=2,
                                    description="census: the tasks (income, age, education, never_married; default "
                                                "age and education); celeba: attribute names (default all 40)")
    image_size: int | tuple[int, int] | None = Field(
        default=None, description="utkface, celeba: side (or [height, width]) the images are resized to (default 64); "
                                  "cityscapes, nyuv2: [height, width] (default as published: 128×256, 288×384)")
    composition: Literal["permuted", "paper"] = Field(
        default="permuted", description="permuted: each source digit used `copies` times; paper: PaMaL/PaLoRA's draw "
                                        "with replacement and fixed counts")
    normalize: Literal["mnist", "none"] = Field(
        default="mnist", description="mnist: (x − 0.1307) / 0.3081 on pixels in [0, 1]; none: the pixels as composed "
                                     "(the papers' MultiMNIST)")
    val_fraction: float | None = Field(default=None, gt=0, lt=1,
                                       description="permuted: source training images held out (default 0.1)")
    copies: int | None = Field(default=None, ge=1, le=20,
                               description="permuted: composites built per source image (default 1)")
    train_composites: int | None = Field(default=None, ge=2, description="paper: composites drawn from the source "
                                                                         "training split, validation included (60,000)")
    val_composites: int | None = Field(default=None, ge=1, description="paper: of those, held out for validation "
                                                                       "(10,000)")
    test_composites: int | None = Field(default=None, ge=1, description="paper: composites drawn from the source "
                                                                        "test split (10,000)")
    max_train: int | None = Field(default=None, ge=1, description="keep at most this many training composites")
    max_eval: int | None = Field(default=None, ge=1, description="keep at most this many val/test composites")
    seed: int = 0
    cache_dir: str | None = Field(default=None, description="Parquet cache; default $PARETO_RAY_CACHE or ~/.cache/pareto-ray")
    factory: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                                description="package.module:function(**kwargs) returning your dataset (tasks and "
                                            "splits; see pareto_ray.data.factory); overrides dataset")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of data.factory")
    cache: bool | None = Field(default=None, description="cache the built dataset as Parquet; default: yes for the "
                                                         "built-in datasets, no for a factory (your code may change)")
    streaming: Literal["auto"] | bool = Field(
        default="auto", description="train from Parquet shards streamed by Ray Data instead of a tensor in each "
                                    "worker's memory; auto: when the cached dataset is over data.stream_above_mb")
    stream_above_mb: float = Field(default=2048.0, gt=0, description="auto streaming: the cached dataset's "
                                                                     "uncompressed size (MB) from which it streams")
    shard_rows: int = Field(default=4096, ge=1, description="streaming: training rows per Parquet shard (a Ray Data "
                                                            "read task each)")
    shuffle_buffer: int | None = Field(default=None, ge=1, description="streaming: rows of each worker's local "
                                                                       "shuffle buffer (default 4 batches)")

    @model_validator(mode="after")
    def _dataset_fields(self) -> DataConfig:
        """Each field only where it means something: the MultiMNIST family's composition fields, data.tasks and
        data.image_size for the datasets that read them."""
        if self.factory is not None:
            return self
        if self.dataset not in MULTIMNIST_DATASETS:
            given = [f"data.{f}" for f, default in MULTIMNIST_FIELDS.items() if getattr(self, f) != default]
            if given:
                raise ValueError(f"{', '.join(given)} appl(ies) to the MultiMNIST family only (composites of digits); "
                                 f"{self.dataset}'s tasks, splits and normalization are its papers' (docs/datasets.md)"
                                 + ("; pick tasks with data.tasks" if self.dataset in TASK_CHOICE else ""))
        if self.tasks is not None:
            if self.dataset not in TASK_CHOICE:
                raise ValueError(f"data.tasks applies to {' and '.join(TASK_CHOICE)} only; {self.dataset}'s tasks are "
                                 f"fixed by its files")
            if len(set(self.tasks)) != len(self.tasks):
                raise ValueError(f"data.tasks names a task twice: {self.tasks}")
            if self.dataset == "census" and not set(self.tasks) <= set(CENSUS_TASKS):
                raise ValueError(f"data.tasks for census must be among {', '.join(CENSUS_TASKS)}; got {self.tasks}")
        if self.image_size is not None:
            if self.dataset not in RESIZABLE:
                raise ValueError(f"data.image_size applies to {', '.join(RESIZABLE)} only; {self.dataset}'s inputs keep "
                                 f"their published size")
            if min(self.image_hw) < 1:
                raise ValueError(f"data.image_size must be positive, got {self.image_size}")
        return self

    @property
    def image_hw(self) -> tuple[int, int] | None:
        """``data.image_size`` as (height, width)."""
        size = self.image_size
        return None if size is None else (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @model_validator(mode="after")
    def _composition_fields(self) -> DataConfig:
        own = {"permuted": ("val_fraction", "copies"), "paper": ("train_composites", "val_composites", "test_composites")}
        for composition, fields in own.items():
            if composition != self.composition:
                given = [f"data.{f}" for f in fields if getattr(self, f) is not None]
                if given:
                    rule = ("the composite counts rule (data.train_composites, data.val_composites, data.test_composites)"
                            if self.composition == "paper" else "each source digit is used data.copies times")
                    raise ValueError(f"{', '.join(given)} do(es) not apply to data.composition={self.composition}: "
                                     f"{rule}; drop {' and '.join(given)} or set data.composition={composition}")
        if self.composition == "paper" and self.val_count >= self.train_count:
            raise ValueError(f"data.val_composites ({self.val_count}) must be below data.train_composites "
                             f"({self.train_count}): validation is drawn from the training composites")
        return self

    @property
    def train_count(self) -> int:
        return 60_000 if self.train_composites is None else self.train_composites

    @property
    def val_count(self) -> int:
        return 10_000 if self.val_composites is None else self.val_composites

    @property
    def test_count(self) -> int:
        return 10_000 if self.test_composites is None else self.test_composites


class ModelConfig(Section):
    """The ``model:`` section: a named backbone (``pareto_ray.models.backbones``) or a user's ``factory``."""

    backbone: Literal["lenet", "mlp", "resnet18", "resnet18_mtl", "vgg16", "segnet"] = "lenet"
    hidden: int | list[int] = Field(default=100, description="mlp: hidden width (two layers), or one width per layer")
    head_hidden: int | None = Field(default=50, ge=1, description="mlp: hidden width of each task head; null: linear "
                                                                  "heads")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="resnet18, resnet18_mtl: dropout rate (LORPMAN D.7)")
    weights: str | None = Field(default=None, description="resnet18: a local state dict to start from (no download)")
    factory: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                                description="package.module:function(tasks, input_shape, **kwargs) returning the "
                                            "network (overrides backbone)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of the backbone or "
                                                                     "factory")


class TrainConfig(Section):
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=256, ge=1, description="global batch size, split evenly over workers")
    lr: float = Field(default=1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0)
    lr_step: int | None = Field(default=None, ge=1, description="multiply the learning rate by lr_gamma every this many "
                                                                "epochs (StepLR: CityScapes 75, NYUv2 100); null: constant")
    lr_gamma: float = Field(default=0.5, gt=0, le=1, description="factor of each lr_step")
    forward: Literal["auto", "merged", "per_sample"] = Field(
        default="auto", description="rays of a step: merged weights per ray, or one per-sample batch; "
                                    "auto = merged on CPU, per_sample on GPU (measured faster on each)")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="the forward's autocast dtype: bf16 on CPU or GPU; fp16 on GPU only (with a "
                                    "GradScaler); task losses, per-task gradients and solves stay float32/64")
    grad_accumulation: int = Field(default=1, ge=1, le=1024, description="micro-batches per optimizer step (each "
                                   "worker's batch split in this many; DDP syncs on the last); not with a "
                                   "gradient-combining method")
    eval_batch_size: int = Field(default=1024, ge=1)


class EvalConfig(Section):
    grid_points: int | None = Field(default=None, ge=1, description="rays on the evaluation grid; default 11/66/100")
    loss_reference: float = Field(default=2.0, gt=0, description="reference point (per task) of the loss hypervolume")


class RayConfig(Section):
    address: str | None = Field(default=None, description="Ray address; default: the job's cluster or a local instance")
    num_workers: int = Field(default=2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    storage_path: str = Field(default="./ray_results", description="where Ray Train keeps checkpoints: a folder every "
                                                                   "node mounts (local on one machine; NFS, EFS or a "
                                                                   "Kubernetes volume on a cluster)")
    max_failures: int = Field(default=1, ge=-1, description="worker-group restarts from the latest checkpoint; -1 = unlimited")
    num_to_keep: int = Field(default=2, ge=1, description="checkpoints kept, best by val_hv")
    data_cpus: float = Field(default=1.0, ge=0, description="streamed training data: CPUs left free beside the "
                                                            "workers for Ray Data's read and decode tasks")
    resources_timeout_s: float | None = Field(
        default=None, ge=0, description="when the cluster has too few CPUs/GPUs (or none large enough) for the "
                                        "workers: seconds to wait for nodes to join (an autoscaler's) before failing; "
                                        "default 900 on a cluster, 0 on a local instance the run started itself")


class MlflowConfig(Section):
    tracking_uri: str | None = Field(
        default=None, description="default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working dir")
    experiment: str = "pareto-ray"
    register_model: str | None = Field(default=None, description="register the final model under this name")


#: ``method:`` is one of the registered methods' configs, chosen by ``method.name``.
MethodSection = Annotated[Union[tuple(cfg for _, cfg in METHODS.values())], Field(discriminator="name")]  # noqa: UP007


class Config(Section):
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$",
                             description="run name; rerunning with the same name resumes that run")
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    method: MethodSection = PaLoRAConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    ray: RayConfig = RayConfig()
    mlflow: MlflowConfig = MlflowConfig()
    tune: TuneConfig | None = Field(default=None, description="search space of `pareto-ray tune` (see search_space.py)")

    @model_validator(mode="before")
    @classmethod
    def _default_method_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("method"), dict) and "name" not in data["method"]:
            data = {**data, "method": {"name": "palora", **data["method"]}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.train.batch_size % self.ray.num_workers:
            raise ValueError(f"train.batch_size ({self.train.batch_size}) must be divisible by ray.num_workers "
                             f"({self.ray.num_workers}): the global batch is split evenly over workers")
        k = self.train.grad_accumulation
        if self.train.batch_size % (self.ray.num_workers * k):
            raise ValueError(f"train.batch_size ({self.train.batch_size}) must be divisible by ray.num_workers × "
                             f"train.grad_accumulation ({self.ray.num_workers} × {k}): each worker's batch is split "
                             f"into {k} equal micro-batches")
        combines = METHODS[self.method.name][0].combines_gradients_for(self.method)
        if combines and k > 1:
            raise ValueError(f"method {self.method.name} (as configured) combines per-task gradients over the whole "
                             f"batch and cannot accumulate them: set train.grad_accumulation=1 (raise "
                             f"train.batch_size or ray.num_workers instead)")
        if self.train.precision == "fp16":
            if not self.ray.use_gpu:
                raise ValueError("train.precision=fp16 needs ray.use_gpu=true (CUDA and its GradScaler); on CPU use "
                                 "train.precision=bf16")
            if combines:
                raise ValueError(f"method {self.method.name} combines per-task gradients, which fp16's loss scaling "
                                 f"does not reach: use train.precision=bf16")
        if self.tune is not None:
            check_space(self)
        return self

    def run_name(self) -> str:
        """The configured name, or ``<method>-<dataset>-<UTC timestamp>``."""
        if self.name:
            return self.name
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        return f"{self.method.name}-{self.data.dataset}-{stamp}"

    def flat(self) -> dict[str, Any]:
        """Dotted-key view of the config (MLflow params)."""
        return _flatten(self.model_dump(mode="json"))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a nested dict."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. train.epochs=3), got {item!r}")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def parse_config(raw: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError("invalid config:\n" + describe_errors(exc)) from None


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is None)."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        raw = yaml.safe_load(p.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
    return parse_config(apply_overrides(raw, overrides or []))
