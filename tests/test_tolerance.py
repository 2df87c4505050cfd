"""The suite's comparison rule: errors relative to the values' scale, so no BLAS path can fail it."""

import torch
from tolerance import assert_close, is_close, scale_of


def test_last_bit_noise_on_large_logits_passes_and_a_real_difference_fails():
    torch.manual_seed(0)
    logits = torch.randn(6, 10) * 800
    logits[0, 0] = 1e-3  # an entry near zero in a tensor of ~800s
    noisy = logits.clone()
    noisy[0, 0] += 800 * 2 * torch.finfo(torch.float32).eps  # the rounding another matmul order gives that entry
    assert not torch.allclose(noisy, logits, rtol=0, atol=1e-6)  # the old, absolute rule fails on it
    assert is_close(noisy, logits)
    wrong = logits.clone()
    wrong[3, 4] += 0.1 * scale_of(logits)
    assert not is_close(wrong, logits)


def test_a_group_scale_covers_small_tensors_of_a_state():
    assert is_close(torch.tensor([1e-7]), torch.tensor([0.0]), scale=1.0)
    assert not is_close(torch.tensor([1e-3]), torch.tensor([0.0]), scale=1.0)
    assert_close(torch.zeros(0), torch.zeros(0))
