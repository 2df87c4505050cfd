"""Networks: multi-task backbones and the preference-conditioned model interface."""

from pareto_ray.models.backbones import BACKBONES, build_backbone, lenet, mlp
from pareto_ray.models.preference import AdaptedModel, FixedModel, MultiTaskNet, PreferenceModel, count_parameters

__all__ = ["BACKBONES", "AdaptedModel", "FixedModel", "MultiTaskNet", "PreferenceModel", "build_backbone",
           "count_parameters", "lenet", "mlp"]
