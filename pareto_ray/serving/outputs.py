"""The answer per task kind: a model's raw outputs → what ``/v1/predict`` returns for each task.

Each kind's ``TaskKind.predict`` (``pareto_ray.tasks``) gives the presented
values (probabilities, values in the original units, a mask, a depth map);
this module only encodes them for JSON:

| kind | fields (one entry per input) |
|---|---|
| classification | ``classes``, ``probabilities``, ``class_names`` (with labels), ``top_k`` (``output.top_k``) |
| binary | ``probability``, ``label`` (0/1) |
| regression | ``values``: the outputs in the target's units |
| segmentation | ``masks``: base64 PNG, palette (mode P; pixel = class id) up to 256 classes, else 16-bit gray; ``areas`` |
| depth | ``depth``: base64 ``.npy`` float32 ``[H, W]`` |
| normals | ``normals``: base64 ``.npy`` float32 ``[3, H, W]``, unit vectors |

Dense maps are ``.npy`` rather than 16-bit PNG: exact float32 in any range and units, one ``numpy.load`` away.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

from pareto_ray.serving.schemas import (
    BinaryPrediction,
    ClassificationPrediction,
    DepthPrediction,
    NormalsPrediction,
    OutputOptions,
    RegressionPrediction,
    SegmentationPrediction,
    TaskPrediction,
    TopClass,
)
from pareto_ray.tasks import Task


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def npy_b64(arr: np.ndarray) -> str:
    """An array as a base64 ``.npy`` file."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return b64(buf.getvalue())


def palette(n: int = 256) -> list[int]:
    """The PASCAL VOC colour map (class 0 black; distinct colours from the class id's bits), flat RGB."""
    out = []
    for k in range(n):
        r = g = b = 0
        c = k
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


PALETTE = palette()


def mask_png(mask: np.ndarray, classes: int) -> bytes:
    """``[H, W]`` class ids → PNG: palette (mode P) for ≤ 256 classes, 16-bit grayscale beyond."""
    buf = io.BytesIO()
    if classes <= 256:
        img = Image.fromarray(mask.astype(np.uint8), mode="P")
        img.putpalette(PALETTE)
    else:
        img = Image.fromarray(mask.astype(np.uint16))
    img.save(buf, "PNG")
    return buf.getvalue()


def _names(task: Task) -> list[str] | None:
    return list(task.labels) if task.labels is not None and len(task.labels) >= task.outputs else None


def present(number: int, task: Task, output: torch.Tensor, options: OutputOptions) -> TaskPrediction:
    """The answer of task ``number`` (1-based) for its raw outputs ``[n, ...]``."""
    shown = task.behaviour.predict(task, output.float())
    names = _names(task)
    common = {"task": number, "name": task.name}
    if task.kind == "classification":
        probs = shown["probabilities"]
        top = None
        if options.top_k:
            values, index = probs.topk(min(options.top_k, probs.shape[-1]), dim=-1)
            top = [[TopClass(class_id=int(c), name=names[int(c)] if names else None, probability=float(p))
                    for p, c in zip(pv.tolist(), cv.tolist())] for pv, cv in zip(values, index)]
        classes = shown["classes"].tolist()
        return ClassificationPrediction(**common, classes=classes, probabilities=probs.tolist(), top_k=top,
                                        class_names=[names[c] for c in classes] if names else None)
    if task.kind == "binary":
        return BinaryPrediction(**common, probability=shown["probability"].reshape(len(output)).tolist(),
                                label=shown["label"].reshape(len(output)).tolist())
    if task.kind == "regression":
        return RegressionPrediction(**common, values=shown["values"].reshape(len(output), -1).tolist())
    if task.kind == "segmentation":
        masks = shown["mask"].numpy()
        areas = None
        if options.areas:
            areas = []
            for m in masks:
                ids, counts = np.unique(m, return_counts=True)
                areas.append({(names[i] if names else str(i)): float(c) / m.size for i, c in zip(ids.tolist(),
                                                                                                 counts.tolist())})
        return SegmentationPrediction(**common, masks=[b64(mask_png(m, task.outputs)) for m in masks], areas=areas)
    if task.kind == "depth":
        return DepthPrediction(**common, depth=[npy_b64(d.astype(np.float32)) for d in shown["depth"].numpy()])
    if task.kind == "normals":
        return NormalsPrediction(**common, normals=[npy_b64(v.astype(np.float32)) for v in shown["normals"].numpy()])
    raise ValueError(f"task {task.name!r}: no answer for kind {task.kind!r}")
