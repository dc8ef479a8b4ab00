"""The finder's training labels: which true sources are detectable, and where."""

import numpy as np

from ..preprocessing import FINDER_STRIDE

__all__ = ["source_radius", "source_significance", "finder_targets"]

#: Detectability cuts of the finder's labels: expected s / sqrt(b) in an aperture
#: of 0.1 deg widened by the source's size (`source_radius`).
POSITIVE_SIGNIFICANCE = 2.5
IGNORE_SIGNIFICANCE = 1.0
APERTURE_DEG = 0.1
HEATMAP_SIGMA_CELLS = 1.0


def source_radius(sources):
    """Radius (deg) that holds most of each source before the PSF.

    0 for points, 1.5 sigma for Gaussians, the radius of disks, the outer
    radius of shells. ``sources`` is a structured array of simulation rows.
    """
    sources = np.atleast_1d(sources)
    names = sources.dtype.names or ()
    extension = sources["extension"] if "extension" in names else np.zeros(len(sources))
    morphology = sources["morphology"] if "morphology" in names else (extension > 0).astype(int)
    width = sources["width"] if "width" in names else np.zeros(len(sources))
    # MORPHOLOGIES order: point, gaussian, disk, shell
    factor = np.array([0.0, 1.5, 1.0, 1.0])[np.asarray(morphology, int)]
    return factor * extension + np.where(np.asarray(morphology) == 3, width, 0.0)


def source_significance(signal, background, sources, binsz):
    """Expected s / sqrt(b) of each source in its aperture (truth-based detectability).

    The aperture is 0.1 deg for a point source, widened in quadrature by the
    source's `source_radius` (``radius`` key of each source, deg, default 0).
    """
    if len(sources) == 0:
        return np.zeros(0)
    ny, nx = signal.shape
    out = []
    for src in sources:
        aperture = np.hypot(APERTURE_DEG, src.get("radius", 0.0))
        radius = int(np.ceil(aperture / binsz)) + 1
        ix, iy = int(np.rint(src["x"])), int(np.rint(src["y"]))
        ys = slice(max(iy - radius, 0), min(iy + radius + 1, ny))
        xs = slice(max(ix - radius, 0), min(ix + radius + 1, nx))
        yy, xx = np.mgrid[ys, xs]
        inside = np.hypot(xx - src["x"], yy - src["y"]) * binsz <= aperture
        s = signal[ys, xs][inside].sum()
        b = background[ys, xs][inside].sum()
        out.append(s / np.sqrt(b + 1.0))
    return np.array(out)


def finder_targets(xs, ys, significance, shape, offset=(0, 0), radii_cells=None):
    """Heatmap (target, weight) and offset (dx, dy, mask) arrays on the cell grid.

    ``xs``, ``ys`` are pixel positions in the padded image (``offset`` added).
    ``radii_cells`` are the sources' sizes in cells: an extended source gets
    one peak at its centre, with a heatmap blob widened by half its size
    (CenterNet scales the blob with the object) and a wider ignore zone.
    """
    if radii_cells is None:
        radii_cells = np.zeros(len(xs))
    h, w = shape[0] // FINDER_STRIDE, shape[1] // FINDER_STRIDE
    heat = np.zeros((h, w, 2), np.float32)
    heat[..., 1] = 1
    off = np.zeros((h, w, 3), np.float32)
    cy, cx = np.mgrid[:h, :w]
    for x, y, sig, size in zip(xs, ys, significance, radii_cells):
        # Cell i spans pixels [4i, 4i + 4): centre at pixel 4i + 1.5.
        gx = (x + offset[1] - (FINDER_STRIDE - 1) / 2) / FINDER_STRIDE
        gy = (y + offset[0] - (FINDER_STRIDE - 1) / 2) / FINDER_STRIDE
        d2 = (cx - gx) ** 2 + (cy - gy) ** 2
        if sig >= POSITIVE_SIGNIFICANCE:
            sigma2 = HEATMAP_SIGMA_CELLS**2 + (size / 2) ** 2
            heat[..., 0] = np.maximum(heat[..., 0], np.exp(-0.5 * d2 / sigma2))
            ix, iy = int(np.clip(np.rint(gx), 0, w - 1)), int(np.clip(np.rint(gy), 0, h - 1))
            heat[iy, ix, 0] = 1.0
            off[iy, ix] = (gx - ix, gy - iy, 1.0)
        elif sig >= IGNORE_SIGNIFICANCE:
            heat[..., 1] = np.where(d2 <= (2 + size) ** 2, 0.0, heat[..., 1])
    return heat, off
