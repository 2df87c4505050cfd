"""Task kinds: losses, metrics and directions on hand-computed cases, and the missing-label rule."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tolerance import assert_close

from pareto_ray.fronts import front_metrics, front_table
from pareto_ray.tasks import Task, TaskEvaluation, loss_terms, task_losses


def _scores(task: Task, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    ev = TaskEvaluation([task], output.shape[0])
    ev.update([output], [target])
    return {k: float(v[0]) for k, v in ev.compute()[0].items()}


def test_classification_loss_accuracy_and_missing_labels():
    task = Task("digit", "classification", 3)
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]]])  # [M=1, N=4, C]
    target = torch.tensor([0, 2, 2, -1])  # the last sample has no label
    (loss,) = task_losses([task], [logits], [target])[0]
    expected = F.cross_entropy(logits[0, :3], target[:3])
    assert_close(loss, expected)
    scores = _scores(task, logits, target)
    assert scores["acc"] == pytest.approx(2 / 3) and scores["loss"] == pytest.approx(float(expected), rel=1e-6)
    assert task.front_metric == "acc" and task.higher_is_better and task.front_reference == 0.0


def test_binary_bce_accuracy_with_nan_labels():
    task = Task("smiling", "binary")
    logits = torch.tensor([[[1.0], [-2.0], [0.5], [3.0]]])
    target = torch.tensor([1.0, 1.0, math.nan, 0.0])
    (loss,) = task_losses([task], [logits], [target])[0]
    expected = F.binary_cross_entropy_with_logits(torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0]))
    assert_close(loss, expected)
    assert _scores(task, logits, target)["acc"] == pytest.approx(1 / 3)


def test_regression_huber_mse_mae_in_original_units():
    huber = Task("age", "regression", loss="huber", huber_delta=1.0, target_mean=30.0, target_std=10.0, reference=0.5)
    pred = torch.tensor([[[0.5], [3.0], [0.0]]])  # normalized units
    target = torch.tensor([0.0, 0.0, math.nan])
    (loss,) = task_losses([huber], [pred], [target])[0]
    assert loss.item() == pytest.approx((0.5 * 0.5 ** 2 + (3.0 - 0.5)) / 2)  # quadratic below δ = 1, linear above
    scores = _scores(huber, pred, target)
    assert scores["mae"] == pytest.approx(10.0 * (0.5 + 3.0) / 2)  # mean absolute error in years
    assert huber.front_metric == "loss" and not huber.higher_is_better and huber.front_reference == 0.5
    mse = Task("torque", "regression", outputs=2)
    y = torch.tensor([[1.0, 2.0], [math.nan, 0.0]])
    out = torch.tensor([[[0.0, 2.0], [5.0, 1.0]]])
    assert task_losses([mse], [out], [y])[0, 0].item() == pytest.approx((1 + 0 + 1) / 3)  # one entry missing
    assert huber.behaviour.predict(huber, torch.tensor([[1.5]]))["values"].item() == pytest.approx(45.0)


def test_segmentation_miou_pixel_accuracy_with_ignore_index():
    task = Task("semantic", "segmentation", 3)
    pred = torch.tensor([[0, 0, 1], [1, 2, 2]])
    target = torch.tensor([[0, 1, 1], [-1, 2, 0]])  # one pixel unlabelled
    logits = F.one_hot(pred, 3).permute(2, 0, 1).float()[None, None] * 10  # [M=1, N=1, C, H, W]
    scores = _scores(task, logits, target[None])
    # labelled pixels: 5, correct 3; IoU class 0: I 1 / U 3, class 1: I 1 / U 2, class 2: I 1 / U 2
    assert scores["pixacc"] == pytest.approx(3 / 5)
    assert scores["miou"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert task.front_metric == "miou" and task.higher_is_better


def test_depth_l1_and_relative_error_on_valid_pixels():
    task = Task("depth", "depth")
    pred = torch.tensor([[[[1.0, 2.0], [4.0, 9.0]]]])[None]  # [M, N, 1, H, W]
    target = torch.tensor([[[[2.0, 2.0], [0.0, 6.0]]]])  # 0 = no depth at that pixel
    scores = _scores(task, pred, target)
    assert scores["abs_err"] == pytest.approx((1 + 0 + 3) / 3)
    assert scores["rel_err"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert task_losses([task], [pred], [target])[0, 0].item() == pytest.approx(4 / 3)
    assert not task.higher_is_better


def test_normals_angle_errors_and_fractions():
    task = Task("normals", "normals", 3)
    angles = torch.tensor([0.0, 10.0, 20.0, 45.0])
    rad = torch.deg2rad(angles)
    pred = torch.stack([torch.sin(rad), torch.zeros(4), torch.cos(rad)]).view(3, 1, 4)  # [3, H=1, W=4]
    target = torch.stack([torch.zeros(4), torch.zeros(4), torch.ones(4)]).view(3, 1, 4)
    target = torch.cat([target, torch.zeros(3, 1, 1)], dim=2)  # a fifth pixel without a normal
    pred = torch.cat([pred * 2.0, torch.ones(3, 1, 1)], dim=2)  # unnormalized predictions are fine
    scores = _scores(task, pred[None, None], target[None])
    assert scores["mean_angle"] == pytest.approx(angles.mean().item(), abs=1e-3)
    assert scores["median_angle"] == pytest.approx(15.0, abs=5.1)  # between the 2nd and 3rd of four (bins of 0.05°)
    assert scores["within_11.25"] == pytest.approx(0.5) and scores["within_22.5"] == pytest.approx(0.75)
    assert scores["within_30"] == pytest.approx(0.75)
    (loss,) = task_losses([task], [pred[None, None]], [target[None]])[0]
    assert loss.item() == pytest.approx((1 - torch.cos(rad)).mean().item(), rel=1e-5)
    assert task.front_metric == "mean_angle" and not task.higher_is_better


def test_a_missing_task_drops_out_without_touching_the_others():
    tasks = [Task("a", "classification", 2), Task("b", "regression")]
    out = [torch.randn(2, 3, 2, requires_grad=True), torch.randn(2, 3, 1, requires_grad=True)]
    targets = [torch.tensor([-1, -1, -1]), torch.tensor([0.5, 1.0, -0.5])]  # task a unlabelled in this batch
    sums, counts = loss_terms(tasks, out, targets)
    assert counts.tolist() == [0.0, 3.0] and sums[:, 0].tolist() == [0.0, 0.0]
    losses = task_losses(tasks, out, targets)
    losses.sum().backward()
    assert out[0].grad.abs().sum() == 0 and out[1].grad.abs().sum() > 0
    assert torch.isfinite(losses).all()


def test_front_hv_uses_each_tasks_direction_and_reference():
    tasks = [Task("age", "regression", loss="huber", reference=0.5), Task("gender", "classification", 2),
             Task("race", "classification", 5)]
    rays = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    metrics = [{"loss": np.array([0.1, 0.3]), "mae": np.array([3.0, 5.0])},
               {"acc": np.array([0.8, 0.9]), "loss": np.array([0.5, 0.4])},
               {"acc": np.array([0.7, 0.6]), "loss": np.array([0.8, 0.9])}]
    table = front_table(rays, metrics, tasks)
    assert table.column_names[:3] == ["ray_1", "ray_2", "ray_3"] and "mae_1" in table.column_names
    m = front_metrics(table)
    # LORPMAN D.1's reference [0.5, 0, 0] with age as loss: boxes (0.5 − 0.1)·0.8·0.7 and (0.5 − 0.3)·0.9·0.6, overlap
    union = 0.4 * 0.8 * 0.7 + 0.2 * 0.9 * 0.6 - 0.2 * 0.8 * 0.6
    assert m["hv"] == pytest.approx(union)
    assert m["loss_1_min"] == pytest.approx(0.1) and m["acc_2_max"] == pytest.approx(0.9)
    assert m["nondominated"] == 2


def test_task_declarations_are_checked():
    with pytest.raises(ValueError, match="unknown kind"):
        Task("x", "ranking")
    with pytest.raises(ValueError, match="binary"):
        Task("x", "classification", 1)
    with pytest.raises(ValueError, match="front metric"):
        Task("x", "classification", 3, front="miou")
    assert Task.from_dict(Task("x", "regression", 2, loss="l1").to_dict()) == Task("x", "regression", 2, loss="l1")
