"""The ``texture`` scene style: Voronoi mosaics whose regions are labelled by texture family alone.

docs/synthetic.md. Each scene is a Voronoi partition of the image into 3-6 cells (one of them plays the background:
there is no separate background class, every cell, the largest included, is one textured region). Each cell gets a
texture family (its class, uniform over ``TEXTURE_FAMILIES``) and, drawn independently per cell:

* two colours from a continuous distribution (uniform RGB, their luma at least ``MIN_LUMA_GAP`` apart, so that the
  texture survives grayscale);
* an orientation (uniform angle), a phase (uniform offset), a period (log-uniform in ``PERIOD`` x size / 64 px) and a
  contrast (uniform in ``CONTRAST``).

So neither colour, nor orientation, nor scale labels a pixel: the class is the local STRUCTURE of the pattern
(oriented lines, a checkerboard, isolated dots, a connected grid, grey band-pass noise, chevrons, binary blobs),
which no linear function of raw pixels or of mean colours can read, but which a network can learn. Scenes are drawn at
twice the size and box-averaged (anti-aliasing), then lit by a gentle gradient and sensor noise, as the other styles.
"""

import math

import numpy as np

TEXTURE_FAMILIES = ("stripes", "checker", "dots", "grid", "noise", "zigzag", "blobs")
CELLS = (3, 7)  # Voronoi cells per scene, an integer in [lo, hi)
PERIOD = (4.0, 8.0)  # pattern period in pixels of a 64-px scene (scaled with the scene size), log-uniform
CONTRAST = (0.5, 1.0)
MIN_LUMA_GAP = 0.25
SUPERSAMPLE = 2
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _soft(signed: np.ndarray, edge: float) -> np.ndarray:
    """A two-level pattern in [0, 1] from a signed distance-like field, with a linear edge ``edge`` wide."""
    return np.clip(0.5 + signed / edge, 0.0, 1.0)


def _band_noise(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, period: float, waves: int = 12) -> np.ndarray:
    """Isotropic random field of wavelength ~``period``: a sum of plane waves of random direction and phase, scaled
    to unit variance."""
    theta = rng.uniform(0, 2 * math.pi, waves)
    k = 2 * math.pi / (period * rng.uniform(0.8, 1.25, waves))
    phase = rng.uniform(0, 2 * math.pi, waves)
    field = sum(np.cos(k[i] * (math.cos(theta[i]) * u + math.sin(theta[i]) * v) + phase[i]) for i in range(waves))
    return field / math.sqrt(waves / 2)


def family_pattern(family: str, u: np.ndarray, v: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    """Blend weight in [0, 1] of ``family`` at rotated, phase-shifted pixel coordinates (u, v) (any equal shapes)."""
    a, b = u * (2 * math.pi / period), v * (2 * math.pi / period)
    edge = 0.15  # of a period: short soft edges
    if family == "stripes":  # one orientation, 50% duty
        return _soft(np.sin(a), 2 * edge * math.pi)
    if family == "checker":  # two orthogonal orientations, squares
        return _soft(np.sin(a) * np.sin(b), edge * math.pi)
    if family == "dots":  # isolated discs on a square lattice
        du, dv = u / period - np.round(u / period), v / period - np.round(v / period)
        return _soft(0.27 - np.sqrt(du * du + dv * dv), edge / 2)
    if family == "grid":  # thin connected lines in two orientations
        du, dv = np.abs(u / period - np.round(u / period)), np.abs(v / period - np.round(v / period))
        return _soft(0.12 - np.minimum(du, dv), edge / 2)
    if family == "noise":  # grey-level band-pass noise: no lines, no lattice, no binary levels
        return np.clip(0.5 + 0.25 * _band_noise(rng, u, v, period), 0.0, 1.0)
    if family == "zigzag":  # chevrons: stripes bent by a triangle wave along them
        tri = 2 * np.abs(v / period - np.floor(v / period + 0.5))  # (0..1), period `period`
        return _soft(np.sin(a + 2.2 * tri * math.pi), 2 * edge * math.pi)
    if family == "blobs":  # binary blobs of random shape (thresholded noise of twice the wavelength)
        return _soft(_band_noise(rng, u, v, 2 * period), 0.3)
    raise ValueError(f"unknown texture family {family!r}")


def _two_colours(rng: np.random.Generator) -> np.ndarray:
    """Two RGB colours (2, 3) in [0, 1], uniform, with luma at least MIN_LUMA_GAP apart (redrawn until so)."""
    while True:
        colours = rng.uniform(0.0, 1.0, (2, 3)).astype(np.float32)
        if abs(float((colours[1] - colours[0]) @ LUMA)) >= MIN_LUMA_GAP:
            return colours


def render_texture_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image (size, size, 3) float32 in [0, 1] (before lighting and noise) and mask (size, size) uint8
    holding the texture family index of every pixel."""
    big = size * SUPERSAMPLE
    n_cells = int(rng.integers(*CELLS))
    seeds = rng.uniform(0, size, (n_cells, 2)).astype(np.float32)  # (x, y) in output pixels
    centres = (np.arange(big, dtype=np.float32) + 0.5) / SUPERSAMPLE  # output-pixel coordinate of each sample
    y, x = (a.ravel() for a in np.meshgrid(centres, centres, indexing="ij"))  # (big*big,) each
    cell = ((x[None] - seeds[:, :1]) ** 2 + (y[None] - seeds[:, 1:]) ** 2).argmin(0)  # (big*big,)
    image = np.empty((big * big, 3), dtype=np.float32)
    labels = np.empty(n_cells, dtype=np.uint8)
    scale = size / 64
    for c in range(n_cells):
        family = int(rng.integers(len(TEXTURE_FAMILIES)))
        theta = rng.uniform(0, 2 * math.pi)
        period = scale * math.exp(rng.uniform(math.log(PERIOD[0]), math.log(PERIOD[1])))
        u0, v0 = rng.uniform(0, period, 2)
        contrast = rng.uniform(*CONTRAST)
        colours = _two_colours(rng)
        inside = np.flatnonzero(cell == c)
        xc, yc = x[inside], y[inside]
        u = math.cos(theta) * xc + math.sin(theta) * yc + u0
        v = -math.sin(theta) * xc + math.cos(theta) * yc + v0
        weight = family_pattern(TEXTURE_FAMILIES[family], u, v, period, rng)  # (n_inside,)
        image[inside] = colours.mean(0) + (contrast * (weight - 0.5))[:, None] * (colours[1] - colours[0])
        labels[c] = family
    image = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean((1, 3))
    # The label of a pixel: the cell holding the pixel's centre sample (nearest seed to the centre).
    centre = (np.arange(size, dtype=np.float32) + 0.5)
    d = (centre[None, None, :] - seeds[:, 0, None, None]) ** 2 + (centre[None, :, None] - seeds[:, 1, None, None]) ** 2
    mask = labels[d.argmin(0)]
    return np.clip(image, 0.0, 1.0), mask
