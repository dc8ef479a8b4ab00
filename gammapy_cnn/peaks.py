"""Where the finder looks: candidate positions from the heatmap and from the significance map,
and the pixel discs and merge radii of candidates. Plain numpy on the native grid."""

import numpy as np
from scipy.ndimage import gaussian_filter, maximum_filter

from .candidates import EXTENDED_TS
from .preprocessing import FINDER_STRIDE
from .utils import NATIVE_BINSZ

__all__ = ["candidate_discs", "heatmap_peaks", "on_valid_pixel", "same_source", "with_significance_peaks"]

#: Smoothing widths (native pixels: 0.1 and 0.3 deg) of the significance maps searched for
#: candidates the heatmap does not give (`with_significance_peaks`).
SIGNIFICANCE_SMOOTHING_PIXELS = (4.0, 12.0)


def heatmap_peaks(heat, offset, window, mask, floor, max_peaks):
    """The local maxima of a heatmap at or above ``floor``, best first (at most ``max_peaks``), on
    valid pixels of ``mask``: x, y (native pixels, the sub-cell ``offset`` applied, the padding
    ``window`` removed) and score."""
    peaks = (heat == maximum_filter(heat, size=3)) & (heat >= floor)
    iy, ix = np.nonzero(peaks)
    order = np.argsort(heat[iy, ix])[::-1][:max_peaks]
    iy, ix = iy[order], ix[order]
    xs = FINDER_STRIDE * (ix + offset[iy, ix, 0]) + (FINDER_STRIDE - 1) / 2 - window[1].start
    ys = FINDER_STRIDE * (iy + offset[iy, ix, 1]) + (FINDER_STRIDE - 1) / 2 - window[0].start
    inside = np.array([on_valid_pixel(mask, px, py) for px, py in zip(xs, ys)], bool)
    return xs[inside], ys[inside], heat[iy, ix][inside].astype(float)


def on_valid_pixel(mask, x, y):
    """Whether (x, y) lies on the map, in a valid pixel."""
    ix, iy = int(np.rint(x)), int(np.rint(y))
    return bool(0 <= ix < mask.shape[1] and 0 <= iy < mask.shape[0] and mask[iy, ix])


def with_significance_peaks(peaks, counts, background, mask, significance, merge, near):
    """Candidates to refine: the heatmap ``peaks`` (x, y, score; the best within ``merge`` pixels
    of each other), then the peaks of the significance of ``counts`` over ``background`` (at
    `SIGNIFICANCE_SMOOTHING_PIXELS`, above ``significance``; None: none) farther than ``near``
    pixels from every kept one, with score 0."""
    kept = []
    for x, y, score in sorted(peaks, key=lambda p: p[2], reverse=True):
        if all(np.hypot(x - k[0], y - k[1]) > merge for k in kept):
            kept.append((x, y, score))
    for sigma in SIGNIFICANCE_SMOOTHING_PIXELS if significance is not None else ():
        area = 4 * np.pi * sigma**2  # a Gaussian kernel of peak 1 holds this many pixels
        n = gaussian_filter(counts * mask, sigma) * area
        b = np.maximum(gaussian_filter(background * mask, sigma) * area, 1e-9)
        significance_map = np.sign(n - b) * np.sqrt(2 * np.maximum(n * np.log(np.maximum(n, 1e-9) / b) - (n - b), 0))
        found = significance_map == maximum_filter(significance_map, size=int(2 * sigma + 1))
        found &= (significance_map >= significance) & mask
        for y, x in zip(*np.nonzero(found)):
            if all(np.hypot(x - k[0], y - k[1]) > near for k in kept):
                kept.append((float(x), float(y), 0.0))
    if not kept:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    xs, ys, scores = (np.array(v, float) for v in zip(*kept))
    return xs, ys, scores


def same_source(row, better, radius):
    """Whether candidate ``row`` is the same source as the ``better`` one (pixels; ``radius``: the merge radius).

    Candidates within ``radius`` are one source. So are an extended
    candidate's fragments: the extended candidates within its size, and,
    within twice its size (where a Gaussian holds 86% of its counts), those
    whose size only their neighbours explained but whose own wide fit
    (``wide_centroid``) landed on it, as a peak on a shell does when the
    other peaks of the shell are fitted as point sources. A faint source
    beside a bright one, whose wide fit also lands on the bright one, lies
    farther out and stays.
    """
    distance = np.hypot(row["x"] - better["x"], row["y"] - better["y"])
    if distance <= radius:
        return True
    if better.get("ts_ext", 0) < EXTENDED_TS:
        return False
    size = better["extension"] / NATIVE_BINSZ.to_value("deg")
    if row.get("ts_ext", 0) >= EXTENDED_TS:
        return distance <= size
    if "wide_centroid" in row and distance <= 2 * size + radius:
        x, y = row["wide_centroid"]
        return np.hypot(x - better["x"], y - better["y"]) <= max(radius, size)
    return False


def candidate_discs(shape, xs, ys, radius):
    """(ny, nx) bool: the discs of ``radius`` pixels around the candidates."""
    discs = np.zeros(shape, bool)
    ny, nx = shape
    for x, y in zip(xs, ys):
        ys_ = slice(int(np.clip(y - radius, 0, ny)), int(np.clip(y + radius + 2, 0, ny)))
        xs_ = slice(int(np.clip(x - radius, 0, nx)), int(np.clip(x + radius + 2, 0, nx)))
        yy, xx = np.ogrid[ys_, xs_]
        discs[ys_, xs_] |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    return discs
