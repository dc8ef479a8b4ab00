"""The background's statistics: how a network estimate meets the counts.

The rules `~gammapy_cnn.CNNBackgroundMaker` and `~gammapy_cnn.CNNSourceFinder`
share, in one home: which pixels are source-free (`away_from_excesses`), the
normalisation and shape refits to the counts (`fit_to_counts`, `refit_shape`),
the split of an energy-integrated background over energy bins
(`split_in_energy`) and the systematic error measured in a map
(`systematic_fraction`). Plain numpy arrays on one pixel grid; no network, no
gammapy object.
"""

import functools

import numpy as np

from .utils import gaussian_smoothed

__all__ = ["away_from_excesses", "fit_to_counts", "refit_shape", "split_in_energy", "systematic_fraction"]

#: Pixels whose smoothed excess exceeds this significance are left out of the
#: background's energy spectrum.
SOURCE_MASK_SIGNIFICANCE = 5.0

#: Smoothing widths (pixels: 0.1 and 0.3 deg) at which excesses are looked for: the
#: second finds extended sources whose surface brightness is below the first's reach.
EXCESS_SCALES = (4.0, 12.0)


def away_from_excesses(counts, background, mask, scales=EXCESS_SCALES):
    """Valid pixels outside significant excesses at any of ``scales`` (Gaussian widths in pixels;
    default `EXCESS_SCALES`), each widened by its scale.

    Each scale is searched on blocks of half its smoothing width (0.05 and
    0.15 deg on native pixels): the same significance map as on pixels, for a
    tenth of the work of the wide Gaussian filter.
    """
    source = np.zeros(mask.shape, bool)
    residual = (counts - background) * mask
    for sigma in scales:
        block = max(int(sigma // 2), 1)
        excess = gaussian_smoothed(_block_sum(residual, block), sigma / block)
        # the background is smooth on 0.2 deg cells: its own smoothing would change nothing
        expected = np.maximum(_block_sum(background, block), 1e-3 * block**2)
        noise = np.sqrt(expected / (4 * np.pi * (sigma / block) ** 2))
        significant = excess / noise > SOURCE_MASK_SIGNIFICANCE
        if significant.any():  # most fields have no excess: nothing to widen
            significant = _dilated(significant, max(int(round(sigma / block)), 1))
            by, bx = significant.shape
            upsampled = np.broadcast_to(significant[:, None, :, None], (by, block, bx, block))
            source |= upsampled.reshape(by * block, bx * block)[: mask.shape[0], : mask.shape[1]]
    keep = mask & ~source
    return keep if keep.any() else mask


def _dilated(image, iterations):
    """``binary_dilation(image, iterations=iterations)`` (the 4-connected cross, zero outside),
    by shifted copies: pixels within a city-block distance ``iterations`` of a true one."""
    out = image.copy()
    for _ in range(iterations):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _block_sum(image, block):
    """Sums over ``block`` x ``block`` pixels, the image zero-padded to a multiple of ``block``."""
    if block == 1:
        return image
    ny, nx = image.shape
    if ny % block or nx % block:
        padded = np.zeros((ny - ny % -block, nx - nx % -block), image.dtype)
        padded[:ny, :nx] = image
        image = padded
    # strided slices, added: several times faster than a reshape reduced over two axes
    rows = image[0::block].copy()
    for k in range(1, block):
        rows += image[k::block]
    out = rows[:, 0::block].copy()
    for k in range(1, block):
        out += rows[:, k::block]
    return out


def fit_to_counts(counts, network_background, mask):
    """Refit the network's background to the counts away from significant excesses.

    The network gives the shape; the level of its training maps held sources
    it learnt to discount on average (~4% too low on empty fields), so the
    normalisation is refit to the counts away from significant excesses, as
    `~gammapy.makers.FoVBackgroundMaker` does with a template, and the shape
    too when the counts demand it (`refit_shape`). A wrong shape makes
    spurious "excesses" that the first pass leaves out, which biases the
    normalisation low (~1% at 1800 s); so after a shape refit the excesses
    are found again with the corrected background and the fit is repeated
    (at most 4 passes, until the excesses no longer change).

    Returns the background and the pixels it was fitted on (outside excesses).
    """
    background, keep = network_background, None
    for _ in range(4):
        previous, keep = keep, away_from_excesses(counts, background, mask)
        if previous is not None and np.array_equal(keep, previous):
            break
        expected = network_background[keep].sum()
        if expected <= 0:
            return background, keep
        background = network_background * (counts[keep].sum() / expected)
        background, reshaped = refit_shape(counts, background, keep)
        if not reshaped:
            break
    return background, keep


#: Largest |log| of the shape correction factor (a factor of ~22000): a fit that wants more
#: has failed (e.g. on random, structureless maps) and the network's shape is kept.
MAX_LOG_FACTOR = 10.0
#: Fewest counts (in the blocks that have a background) a shape refit is tried with.
MIN_SHAPE_COUNTS = 100
#: Knots of the radial part of the shape correction, in units of the map's half-width.
_SHAPE_KNOTS = np.array([0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5])


def _shape_basis(x, y):
    """Piecewise-linear functions of the radius (a partition of unity) plus a gradient."""
    r = np.hypot(x, y)
    unit = np.eye(len(_SHAPE_KNOTS))
    return np.stack([np.interp(r, _SHAPE_KNOTS, u) for u in unit] + [x, y])


@functools.lru_cache(maxsize=16)
def _shape_design(by, bx, block, cx, cy):
    """`_shape_basis` at the centres of ``by`` x ``bx`` blocks, positions in half-widths of the
    blocks' span from the centre (``cx``, ``cy``, pixels). Cached: every refit of a map, and of
    each of its energy bins, uses the same one."""
    yb, xb = np.mgrid[:by, :bx]
    design = _shape_basis((((xb + 0.5) * block - 0.5 - cx) / (bx * block / 2)).ravel(),
                          (((yb + 0.5) * block - 0.5 - cy) / (by * block / 2)).ravel())
    design.flags.writeable = False
    return design


@functools.lru_cache(maxsize=16)
def _shape_pixels(ny, nx, half_x, half_y, cx, cy):
    """The shape correction's coordinates on every pixel: the knot interval of the radius and
    the radius beyond that interval's first knot (`_SHAPE_KNOTS`; clamped at the last knot, as
    `numpy.interp`), and x, y in half-widths. Cached, as `_shape_design`: a full map's radii
    and their interpolation took most of a refit's time."""
    x = ((np.arange(nx) - cx) / half_x)[None, :]
    y = ((np.arange(ny) - cy) / half_y)[:, None]
    r = np.minimum(np.hypot(x, y), _SHAPE_KNOTS[-1])
    index = np.clip(np.searchsorted(_SHAPE_KNOTS, r, side="right") - 1, 0, len(_SHAPE_KNOTS) - 2)
    offset = r - _SHAPE_KNOTS[index]
    for array in (index, offset, x, y):
        array.flags.writeable = False
    return index, offset, x, y


@functools.lru_cache(maxsize=1)
def _shape_penalty():
    """A weak curvature penalty on the radial part of the shape correction.

    It lets knots with no block left (masked, or inside an excess) follow their
    neighbours; it does not move knots the counts constrain (their Fisher
    information is thousands).
    """
    k = len(_SHAPE_KNOTS)
    second_difference = np.zeros((k - 2, k + 2))
    for i in range(k - 2):
        second_difference[i, i : i + 3] = (1, -2, 1)
    penalty = 10.0 * second_difference.T @ second_difference + 1e-6 * np.eye(k + 2)
    penalty.flags.writeable = False
    return penalty


def refit_shape(counts, background, keep, block=8, min_delta_ts=25.0, centre=None):
    """Correct the background shape by a smooth factor when the counts demand it.

    The factor is ``exp(f(r) + c_x x + c_y y)``, with ``f`` piecewise linear
    in the distance ``r`` from the map centre (knots every 0.2 half-widths,
    so every 0.5 deg on a 5 deg map) and ``x, y`` the position relative to
    the centre in half-widths: a radial acceptance and a gradient, the
    freedom `~gammapy.makers.FoVBackgroundMaker` users add with spatial
    models. It is fitted by Poisson likelihood to the counts outside
    excesses on ``block``-pixel blocks and applied only when it improves the
    fit by ``2 dlogL >= min_delta_ts`` over the plain normalisation: at high
    statistics (long exposures, an instrument whose acceptance differs from
    the training ones) the data fix the shape; at low statistics the
    network's shape is kept. So it is when the fit fails (singular
    system, non-finite values, a factor beyond ``exp(MAX_LOG_FACTOR)``): the
    Newton steps work on the clipped exponent, so no map overflows.
    ``centre`` is the (x, y) pixel of the pointing, the centre of the radial
    part (default: the map centre).

    Returns
    -------
    background : `~numpy.ndarray`
        The corrected (or the given) background.
    reshaped : bool
        Whether the correction was applied.
    """
    ny, nx = counts.shape
    by, bx = ny // block, nx // block
    if by < 3 or bx < 3:
        return background, False
    crop = (slice(0, by * block), slice(0, bx * block))
    if counts[crop][keep[crop]].sum() < MIN_SHAPE_COUNTS:  # a cheap bound of the exact check below
        return background, False

    def blocks(image):
        return _block_sum(image[crop], block).ravel()

    n = blocks(counts * keep)
    b = blocks(background * keep)
    valid = b > 0
    if n[valid].sum() < MIN_SHAPE_COUNTS:
        return background, False
    cx, cy = ((bx * block - 1) / 2, (by * block - 1) / 2) if centre is None else tuple(map(float, centre))
    design, penalty = _shape_design(by, bx, block, cx, cy), _shape_penalty()
    design, n, b = design[:, valid], n[valid], b[valid]
    params = np.zeros(len(design))
    try:
        for _ in range(30):  # Newton steps of the penalised Poisson log-likelihood (concave)
            # in log space, the exponent clipped: a random map must not overflow exp
            mu = b * np.exp(np.clip(params @ design, -MAX_LOG_FACTOR, MAX_LOG_FACTOR))
            step = np.linalg.solve((design * mu) @ design.T + penalty,
                                   design @ (n - mu) - penalty @ params)
            params += step
            if not np.all(np.isfinite(params)) or np.abs(step).max() < 1e-6:
                break
    except np.linalg.LinAlgError:
        return background, False
    log_factor = params @ design
    # a factor beyond the clip is no acceptance correction but a failed fit: keep the network's shape
    if not np.all(np.isfinite(log_factor)) or np.abs(log_factor).max() >= MAX_LOG_FACTOR:
        return background, False
    # the likelihood gain over the plain normalisation mu0 (already applied up to rounding),
    # with log(mu / mu0) = log_factor - log(norm) so that no ratio of tiny numbers is formed
    mu = b * np.exp(log_factor)
    norm = n.sum() / b.sum()
    delta_ts = 2 * np.sum(n * (log_factor - np.log(norm)) - (mu - b * norm))
    if not np.isfinite(delta_ts) or delta_ts < min_delta_ts:
        return background, False
    k = len(_SHAPE_KNOTS)  # sum of tents weighted by their parameters = interpolation of them
    index, offset, x, y = _shape_pixels(ny, nx, bx * block / 2, by * block / 2, cx, cy)
    slopes = np.diff(params[:k]) / np.diff(_SHAPE_KNOTS)
    log_factor = np.take(params[:k], index) + np.take(slopes, index) * offset + params[k] * x + params[k + 1] * y
    # outside the blocks' range (the map's corners) the gradient extrapolates: bound it too
    log_factor = np.clip(log_factor, -MAX_LOG_FACTOR, MAX_LOG_FACTOR)
    return background * np.exp(log_factor), True


def split_in_energy(background, cube, counts, mask, exclude=None, centre=None, safe=None, source_free=None):
    """The background image split in energy like the counts away from sources.

    The one rule for which pixels make the spectrum: the valid pixels
    (``mask``) outside significant excesses (smoothed excess above
    `SOURCE_MASK_SIGNIFICANCE`, widened by 4 pixels; `away_from_excesses`)
    and outside ``exclude`` (e.g. the discs of known candidates). When that
    leaves no pixel, all valid ones are used; with no counts there, the
    spectrum is flat (the estimate is ~0 anyway).

    The camera acceptance widens with energy, so one spatial shape does not
    fit every bin: where a bin's counts demand it (`refit_shape`: likelihood
    gain >= 25, i.e. long exposures), its share gets its own smooth factor
    (radial about ``centre``, the pointing's pixel, plus a gradient), and the
    bins are then rescaled pixel by pixel so that their sum stays
    ``background``: the image fixes the total, the bins how it splits in
    energy.

    Parameters
    ----------
    background : `~numpy.ndarray`
        (ny, nx) energy-integrated background.
    cube : `~numpy.ndarray`
        (n_energy, ny, nx) counts per energy bin (inside the safe mask).
    counts, mask : `~numpy.ndarray`
        (ny, nx) energy-integrated counts and validity mask.
    exclude : `~numpy.ndarray`, optional
        (ny, nx) bool, pixels to leave out as well.
    centre : tuple of float, optional
        (x, y) pixel of the pointing. Default: the map centre.
    safe : `~numpy.ndarray`, optional
        (n_energy, ny, nx) bool, where each bin's counts are valid (``cube``
        is zero elsewhere). Default: everywhere.
    source_free : `~numpy.ndarray`, optional
        ``away_from_excesses(counts, background, mask)`` when the caller has it already.

    Returns
    -------
    background : `~numpy.ndarray`
        (n_energy, ny, nx).
    """
    keep = away_from_excesses(counts, background, mask) if source_free is None else source_free
    if exclude is not None and (keep & ~exclude).any():
        keep = keep & ~exclude
    per_energy = np.asarray(cube, float).reshape(len(cube), -1) @ keep.ravel().astype(float)
    total = per_energy.sum()
    fractions = per_energy / total if total > 0 else np.full(len(cube), 1 / len(cube))
    split = background[None] * fractions[:, None, None]
    reshaped = False
    for i, counts_bin in enumerate(np.asarray(cube, float)):
        valid = keep if safe is None else keep & safe[i]
        split[i], changed = refit_shape(counts_bin, split[i], valid, centre=centre)
        reshaped |= changed
    if reshaped:
        total = split.sum(axis=0)
        split *= np.divide(background, total, out=np.zeros_like(total), where=total > 0)[None]
    return split


def systematic_fraction(counts, background, keep, block=8):
    """Fractional systematic error of a background image, measured in its source-free part.

    On ``block`` x ``block`` pixel blocks (0.2 deg on native pixels, the PSF
    scale) lying wholly in ``keep``, the scatter of counts minus background
    beyond Poisson, sum((N - B)^2 - B), is compared with sum(B^2): its ratio
    is the variance of a fractional error ``eps`` of the background (``B`` ->
    ``B (1 +- eps)``). The excess scatter is first reduced by twice its
    Poisson standard error, sqrt(sum(2 B^2 + B)), so that a background right
    within Poisson noise gives 0, not a noise-driven positive value.

    Parameters
    ----------
    counts, background : `~numpy.ndarray`
        (ny, nx) energy-integrated counts and background.
    keep : `~numpy.ndarray`
        (ny, nx) bool, valid pixels away from sources.

    Returns
    -------
    eps : float
        0 when the scatter is Poisson (or too few blocks, < 10).
    """
    ny, nx = counts.shape
    by, bx = ny // block, nx // block

    def blocks(image):
        return _block_sum(image[: by * block, : bx * block], block).ravel()

    whole = blocks(keep.astype(float)) == block * block
    n, b = blocks(counts * keep)[whole], blocks(background * keep)[whole]
    if len(b) < 10 or not np.sum(b**2) > 0:
        return 0.0
    excess = np.sum((n - b) ** 2 - b) - 2 * np.sqrt(np.sum(2 * b**2 + b))
    return float(np.sqrt(max(excess, 0.0) / np.sum(b**2)))
