"""Pareto-front methods; each is a short module on the shared loop.

``METHODS`` maps ``method.name`` in the YAML config to the method class and
its config class.
"""

from __future__ import annotations

from typing import Any

from pareto_ray.methods.base import Method, MethodConfig
from pareto_ray.methods.cosmos import COSMOS, COSMOSConfig
from pareto_ray.methods.lorpman import LORPMAN, LORPMANConfig
from pareto_ray.methods.ls import LinearScalarization, LSConfig
from pareto_ray.methods.mgda import MGDA, MGDAConfig
from pareto_ray.methods.palora import PaLoRA, PaLoRAConfig
from pareto_ray.methods.pamal import PaMaL, PaMaLConfig
from pareto_ray.methods.pareto_mtl import ParetoMTL, ParetoMTLConfig
from pareto_ray.methods.phn import PHN, PHNConfig
from pareto_ray.methods.phn_lora import PHNLoRA, PHNLoRAConfig
from pareto_ray.models import MultiTaskNet, PreferenceModel, build_backbone
from pareto_ray.tasks import Task, classification_tasks

METHODS: dict[str, tuple[type[Method], type[MethodConfig]]] = {
    "ls": (LinearScalarization, LSConfig),
    "palora": (PaLoRA, PaLoRAConfig),
    "lorpman": (LORPMAN, LORPMANConfig),
    "phn_lora": (PHNLoRA, PHNLoRAConfig),
    "pamal": (PaMaL, PaMaLConfig),
    "cosmos": (COSMOS, COSMOSConfig),
    "phn": (PHN, PHNConfig),
    "mgda": (MGDA, MGDAConfig),
    "pareto_mtl": (ParetoMTL, ParetoMTLConfig),
}


def build_method(cfg: MethodConfig, num_tasks: int) -> Method:
    method_cls, _ = METHODS[cfg.name]
    return method_cls(cfg, num_tasks)


def build_model(model_cfg: Any, method_cfg: MethodConfig, tasks: list[Task] | int,
                input_shape: tuple[int, ...] = (1, 28, 28)) -> tuple[Method, PreferenceModel, MultiTaskNet]:
    """(method, preference model, plain multi-task reference net) for a config's ``model:`` and ``method:``.

    ``tasks``: the dataset's task list, or a number of 10-way classification tasks.
    """
    if isinstance(tasks, int):
        tasks = classification_tasks(tasks)
    method = build_method(method_cfg, len(tasks))
    model = method.build_model(build_backbone(model_cfg, tasks, input_shape))
    return method, model, build_backbone(model_cfg, tasks, input_shape)


__all__ = ["METHODS", "Method", "MethodConfig", "build_method", "build_model", "LSConfig", "PaLoRAConfig"]
