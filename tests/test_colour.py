"""Tests of croc_utils/colour.py: the packed row of a view's colour operations (collate, unpack, the identity), the
released draws seen through it, and the blur kernel derived from the largest drawn radius."""

import itertools
import math

import pytest
import torch
from torch.utils.data import default_collate

from croc_utils.colour import (
    BLUR_KERNEL_SIZE,
    BLUR_RADIUS,
    IDENTITY_FACTORS,
    PARAMS_LENGTH,
    colour_params_tensor,
    pack_colour_params,
    unpack_colour_params,
)
from croc_utils.photometric import apply_photometric
from croc_utils.transforms import JITTER_RANGES, LOCAL_COLOUR, VIEW1_COLOUR, VIEW2_COLOUR, sample_colour_params
from tests.test_photometric import mixed_params, random_images


def test_rows_collate_and_unpack():
    params = mixed_params(5, seed=6) + [None]
    rows = [colour_params_tensor(p) for p in params]
    packed = default_collate(rows)
    assert packed.shape == (6, PARAMS_LENGTH) and torch.equal(packed, pack_colour_params(params))
    unpacked = unpack_colour_params(packed)
    for i, p in enumerate(params[:5]):
        assert bool(unpacked.jitter[i]) == (p.jitter is not None)
        factors = p.jitter if p.jitter is not None else (1.0, 1.0, 1.0, 0.0)
        assert torch.allclose(unpacked.factors[i], torch.tensor(factors, dtype=torch.float32))
        assert unpacked.order[i].tolist() == list(p.jitter_order)
        assert bool(unpacked.grayscale[i]) == p.grayscale and bool(unpacked.solarize[i]) == p.solarize
        assert bool(unpacked.blur[i]) == (p.blur_radius is not None)
        assert math.isclose(float(unpacked.sigma[i]), p.blur_radius or 0.0, rel_tol=1e-6)
    assert not (unpacked.jitter[5] or unpacked.grayscale[5] or unpacked.blur[5] or unpacked.solarize[5])
    images = random_images(batch=6, size=24)
    assert torch.equal(apply_photometric(images, unpacked), apply_photometric(images, packed))


def within(count: int, n: int, p: float, sds: float = 4.0) -> bool:
    """count of a Binomial(n, p) within `sds` standard deviations of n * p (exact for p in {0, 1})."""
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p)) + 1e-9


def uniform_ok(values: torch.Tensor, lo: float, hi: float, sds: float = 4.0) -> bool:
    """Inside [lo, hi], reaching both ends, with a mean within `sds` standard errors of the midpoint."""
    width = hi - lo
    spread = 0.02 * width  # n >= 300 draws of a uniform all miss an end by 2% with probability < 3e-3
    mean_ok = abs(values.double().mean() - (lo + hi) / 2) <= sds * width / math.sqrt(12 * len(values))
    ends_ok = values.min() <= lo + spread and values.max() >= hi - spread
    return bool(values.min() >= lo - 1e-6 and values.max() <= hi + 1e-6 and mean_ok and ends_ok)


@pytest.mark.parametrize(
    "pipeline, blur_p, solarize_p", [(VIEW1_COLOUR, 1.0, 0.0), (VIEW2_COLOUR, 0.1, 0.2), (LOCAL_COLOUR, 0.5, 0.0)]
)
def test_packed_draws_follow_released_probabilities_and_ranges(pipeline, blur_p, solarize_p):
    n = 3000
    gen = torch.Generator().manual_seed(7)
    p = unpack_colour_params(pack_colour_params([sample_colour_params(pipeline, gen) for _ in range(n)]))
    assert within(int(p.jitter.sum()), n, 0.8) and within(int(p.grayscale.sum()), n, 0.2)
    assert within(int(p.blur.sum()), n, blur_p) and within(int(p.solarize.sum()), n, solarize_p)
    for k, (lo, hi) in enumerate(JITTER_RANGES):
        assert uniform_ok(p.factors[p.jitter, k], lo, hi), f"factor {k}"
    assert torch.equal(p.factors[~p.jitter], torch.tensor([1.0, 1.0, 1.0, 0.0]).expand(int((~p.jitter).sum()), 4))
    if blur_p > 0:
        assert uniform_ok(p.sigma[p.blur], 0.1, 2.0)
    assert torch.equal(p.sigma[~p.blur], torch.zeros(int((~p.blur).sum())))
    counts = {perm: 0 for perm in itertools.permutations(range(4))}
    for row in p.order.tolist():
        counts[tuple(row)] += 1  # a KeyError means a row that is not a permutation
    assert all(within(c, n, 1 / 24) for c in counts.values())  # every order appears, at a uniform rate


def test_no_colour_operations_is_the_identity_row():
    row = colour_params_tensor(None)
    assert row.shape == (PARAMS_LENGTH,) and row.dtype == torch.float32
    p = unpack_colour_params(row[None])
    assert not (p.jitter | p.grayscale | p.blur | p.solarize).any()
    assert p.factors[0].tolist() == list(IDENTITY_FACTORS) and p.order[0].tolist() == [0, 1, 2, 3]


def test_blur_kernel_is_derived_from_the_largest_drawn_radius():
    sigma = BLUR_RADIUS[1]
    assert BLUR_KERNEL_SIZE % 2 == 1 and BLUR_KERNEL_SIZE // 2 == math.ceil(3 * sigma)  # +-3 sigma: 13 taps at 2.0
    # the Gaussian mass the truncated kernel drops at the largest sigma (it is renormalised) stays below 0.3%
    dropped = math.erfc((BLUR_KERNEL_SIZE // 2 + 0.5) / (sigma * math.sqrt(2)))
    assert dropped < 3e-3
    draws = [sample_colour_params(VIEW1_COLOUR, torch.Generator().manual_seed(s)).blur_radius for s in range(200)]
    assert max(draws) <= sigma and min(draws) >= BLUR_RADIUS[0]
