"""Poisson fits of source profiles over a fixed background: position, counts, TS, size.

`fit_source` fits a point-like source (a King profile, the shape of gammapy's
``PSFKing``) and gives the finder's sub-pixel positions and TS; `fit_extension`
widens the profile to give an extended candidate its centroid and size.

An extended source is one candidate, located at its centroid, with a size and
the significance of that size. `fit_extension` fits the energy-integrated
counts around a candidate with the finder's King profile
(`KING_GAMMA`) whose width is free but at least that of
the point-spread function, on a cutout that grows with the fitted width (up
to `MAX_FIT_RADIUS_DEG`), and again with the width fixed at the PSF's:

- ``extension``: the sigma of the Gaussian which, convolved with the PSF,
  gives the fitted width: ``sqrt(s^2 - s_psf^2) / KING_PER_GAUSSIAN_SIGMA``.
  The King profile (gamma 3) that best fits an untruncated Gaussian of sigma
  1 has ``s = 0.70``; on the fit's cutout, which holds the Gaussian to 3-4
  sigma, it is 0.81 (simulated 1 Crab Gaussians of 0.2-0.7 deg, 1800 s, true
  background and PSF: ratio 1.17-1.18 with 0.70), the value used. For a disk
  of radius r the extension is about 0.6 r, for a thin shell about 0.8 r: the
  Gaussian that fits best, as gammapy's
  `~gammapy.modeling.models.GaussianSpatialModel` would give;
- ``ts_ext``: twice the log-likelihood gain of the free width over the PSF's
  (nested models: ~chi2 with 1 degree of freedom at the boundary, so
  ``ts_ext >= 9`` is the usual "extended at 3 sigma").

A centrally peaked profile fitted to a limb-brightened shell misplaces its
centre: on stacks of a faint 1 deg shell a Gaussian likelihood fit (gammapy's)
lands 0.06-0.15 deg from it, a shell fit 0.01-0.04 deg. `fit_shell` fits
gammapy's `~gammapy.modeling.models.ShellSpatialModel` profile, blurred by
the point-spread function, on the extension fit's cutout; the finder takes
its centre when it explains the counts better (`SHELL_TS`).

Two point sources a few PSF widths apart are fitted better by one wide
profile than by one point source, so the finder fits the size again with its
neighbouring candidates as point sources in the background (`fit_size`, with `fit_points`):
a candidate is extended only when it is so both ways.
"""

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import minimize

__all__ = [
    "EXTENDED_TS",
    "KING_GAMMA",
    "KING_PER_GAUSSIAN_SIGMA",
    "MAX_FIT_RADIUS_DEG",
    "MIN_GROUP_EXCESS",
    "fit_extension",
    "fit_points",
    "fit_shell",
    "fit_size",
    "fit_source",
    "king_profile",
    "king_sigma_from_r68",
    "shell_profile",
]


#: A candidate is extended when its ``ts_ext`` reaches this (~3 sigma, 1 degree of freedom).
EXTENDED_TS = 9.0
#: Energy bins are grouped so that each group holds at least this many fitted
#: source counts; a source with fewer than twice this is fitted energy-integrated.
MIN_GROUP_EXCESS = 6.0
#: Tail index of the King profile fitted to sources (gammapy's PSFKing shape):
#: IACT point-spread functions have broader wings than a Gaussian.
KING_GAMMA = 3.0
#: Narrowest profile width (pixels) fitted: narrower ones the pixel grid does not resolve.
MIN_WIDTH = 0.6


def fit_source(counts, background, x0, y0, radius, min_ts=0.0):
    """Poisson maximum-likelihood fit of a point-like source over a fixed background.

    The source profile is a King function, ``(1 + r^2 / (2 gamma sigma^2))^-gamma``
    with ``gamma = KING_GAMMA`` (the shape of gammapy's ``PSFKing``): IACT
    point-spread functions have broader wings than a Gaussian, and a Gaussian
    fitted to them is too wide for the core, where the position is measured.

    Given cubes (one image per energy bin), the source is first fitted to the
    energy-integrated images, which gives its counts and TS; then the energy
    bins are grouped into bands of at least `MIN_GROUP_EXCESS` fitted source
    counts and the source is fitted again with one position and, per band,
    its own width and amplitude, which gives the position. The PSF narrows
    with energy, so the few high-energy counts locate the source best; an
    energy-integrated profile weights them like the broad low-energy ones.

    Parameters
    ----------
    counts, background : `~numpy.ndarray`
        (ny, nx) images or (n_energy, ny, nx) cubes.
    x0, y0 : float
        Start position (pixels).
    radius : float
        Radius of the fitted cutout (pixels).
    min_ts : float
        Skip the energy-resolved fit when the energy-integrated TS is below
        this (a candidate about to be rejected needs no precise position).

    Returns
    -------
    result : dict
        ``x``, ``y`` and ``pos_err`` (1-sigma per axis, pixels, from the
        Fisher information, at most ``radius``) of the energy-resolved fit;
        ``sigma`` (pixels), ``amplitude`` (source counts) and ``ts`` of the
        energy-integrated one; ``n_bands``, the energy bands fitted.
    """
    counts, background = np.asarray(counts), np.asarray(background)
    if counts.ndim == 2:
        counts, background = counts[None], background[None]
    ys, xs, xx, yy = _cutout(counts, x0, y0, radius)
    c = counts[:, ys, xs].reshape(len(counts), -1).astype(float)
    b = np.maximum(background[:, ys, xs].reshape(len(counts), -1).astype(float), 1e-6 / len(counts))

    excess = max(np.sum((c - b).sum(axis=0)[(xx - x0) ** 2 + (yy - y0) ** 2 <= 9]), 1.0)
    start = np.array([x0, y0, np.log(2.5), np.log(excess)])
    total = _fit_profile(c.sum(axis=0, keepdims=True), b.sum(axis=0, keepdims=True), xx, yy,
                          start, radius)
    bands = _energy_bands(c, b, xx, yy, total) if total["ts"] >= min_ts else [list(range(len(c)))]
    fit = total
    if len(bands) > 1:
        c_b = np.array([c[band].sum(axis=0) for band in bands])
        b_b = np.array([b[band].sum(axis=0) for band in bands])
        weights = np.maximum(c_b.sum(axis=1) - b_b.sum(axis=1), 1.0)
        x, y, log_s, log_a = total["params"]
        start = np.concatenate([[x, y], np.full(len(bands), log_s),
                                log_a + np.log(weights / weights.sum())])
        fit = _fit_profile(c_b, b_b, xx, yy, start, radius)
    x, y = fit["params"][:2]
    _, _, log_s, log_a = total["params"]
    return dict(x=x, y=y, pos_err=fit["pos_err"], sigma=np.exp(log_s), amplitude=np.exp(log_a),
                ts=total["ts"], n_bands=len(bands))


def _energy_bands(counts, background, xx, yy, total):
    """Consecutive energy bins grouped into bands of at least `MIN_GROUP_EXCESS` source counts."""
    x, y, log_s, _ = total["params"]
    near = (xx - x) ** 2 + (yy - y) ** 2 <= (2 * np.exp(log_s)) ** 2
    excess = (counts[:, near] - background[:, near]).sum(axis=1)
    bands, current, accumulated = [], [], 0.0
    for i, value in enumerate(excess):
        current.append(i)
        accumulated += value
        if accumulated >= MIN_GROUP_EXCESS:
            bands.append(current)
            current, accumulated = [], 0.0
    if current:  # a faint high-energy tail joins the last band
        if bands:
            bands[-1] += current
        else:
            bands.append(current)
    return bands


def _fit_profile(c, b, xx, yy, start, radius, width_range=None):
    """Fisher scoring of King profiles sharing one position, one width and amplitude per band.

    ``c``, ``b``: (n_bands, n_pixels); ``start``: x, y, log widths, log amplitudes;
    ``width_range``: (low, high) of the log widths (pixels; equal bounds fix them).
    Default: `MIN_WIDTH` to half the radius.
    """
    n = len(c)
    x0, y0 = start[:2]
    log_low, log_high = (np.log(MIN_WIDTH), np.log(radius / 2)) if width_range is None else width_range
    low = np.concatenate([[x0 - radius / 2, y0 - radius / 2], np.full(n, log_low),
                          np.full(n, np.log(0.1))])
    high = np.concatenate([[x0 + radius / 2, y0 + radius / 2], np.full(n, log_high),
                           np.full(n, np.log(1e7))])
    eye = np.eye(n)[:, :, None]  # a band's width and amplitude act on its own pixels only

    def model(p):
        """The expected counts, and what their gradient needs."""
        x, y = p[:2]
        s2 = np.exp(2 * p[2 : 2 + n])[:, None]
        a = np.exp(p[2 + n :])[:, None]
        u = ((xx - x) ** 2 + (yy - y) ** 2) / (2 * KING_GAMMA * s2)
        ag = a * (1 - 1 / KING_GAMMA) / (2 * np.pi * s2) * (1 + u) ** -KING_GAMMA
        return (b + ag).ravel(), (x, y, s2, u, ag)

    def gradients(x, y, s2, u, ag):
        d_pos = ag / (s2 * (1 + u))  # d(model)/dx = d_pos * (xx - x)
        return np.concatenate([
            (d_pos * (xx - x))[None], (d_pos * (yy - y))[None],
            eye * (ag * (2 * KING_GAMMA * u / (1 + u) - 2))[None], eye * ag[None],
        ]).reshape(2 + 2 * n, -1)

    data = c.ravel()
    p = np.clip(start, low, high)
    # Fisher scoring (Gauss-Newton for Poisson data) with step halving: converges in
    # ~10 steps of tens of microseconds, with no optimiser threads or overhead. The
    # gradient is computed for accepted steps only: about half the trials are halved.
    mu, parts = model(p)
    grads = gradients(*parts)
    value = np.sum(mu - data * np.log(mu))
    for _ in range(30):
        score = grads @ (data / mu - 1)
        fisher = (grads / mu) @ grads.T + 1e-9 * np.eye(len(p))
        try:
            step = np.linalg.solve(fisher, score)
        except np.linalg.LinAlgError:
            break
        for _ in range(8):
            trial = np.clip(p + step, low, high)
            mu_t, parts = model(trial)
            value_t = np.sum(mu_t - data * np.log(mu_t))
            if value_t <= value:
                break
            step = step / 2
        else:
            break
        converged = value - value_t < 1e-4  # of a log-likelihood: far below any error
        p, mu, grads, value = trial, mu_t, gradients(*parts), value_t
        if converged:
            break
    try:
        cov = np.linalg.inv((grads / mu) @ grads.T)
        # a candidate with no fitted excess has an unconstrained position: say
        # "somewhere in the fitted region", not an astronomically large number
        pos_err = float(min(np.sqrt(max((cov[0, 0] + cov[1, 1]) / 2, 0)), radius))
        log_width_err = float(np.sqrt(max(cov[2, 2], 0)))
    except np.linalg.LinAlgError:
        pos_err, log_width_err = float(radius), np.inf
    bkg = b.ravel()
    value0 = np.sum(bkg - data * np.log(bkg))
    return dict(params=p, ts=max(2 * (value0 - value), 0.0), pos_err=pos_err,
                log_width_err=log_width_err)


#: Width of the King profile (gamma 3) fitted to a Gaussian of sigma 1 on the
#: fit's cutout (0.70 for an untruncated one; calibrated, see the module docstring).
KING_PER_GAUSSIAN_SIGMA = 0.815
#: Largest cutout radius of the extension fit (a 1 deg shell fits inside).
MAX_FIT_RADIUS_DEG = 1.6
#: r68 of the King profile (gamma 3) in units of its sigma.
_KING_R68 = float(np.sqrt(2 * KING_GAMMA * (0.32 ** (1 / (1 - KING_GAMMA)) - 1)))


def king_sigma_from_r68(r68):
    """King sigma (gamma 3) of a profile whose 68% containment radius is ``r68``."""
    return r68 / _KING_R68


def king_profile(xx, yy, x, y, sigma):
    """The King profile (`KING_GAMMA`) of width ``sigma`` at (``x``, ``y``), normalised to 1 over the plane.

    Widths below `MIN_WIDTH` pixels, which the pixel grid does not resolve, are taken as `MIN_WIDTH`.
    """
    s2 = max(float(sigma), MIN_WIDTH) ** 2
    u = ((xx - x) ** 2 + (yy - y) ** 2) / (2 * KING_GAMMA * s2)
    return (1 - 1 / KING_GAMMA) / (2 * np.pi * s2) * (1 + u) ** -KING_GAMMA


def fit_points(counts, background, xs, ys, psf_sigma, x0, y0, radius):
    """Counts of point sources at fixed positions over a fixed background (Poisson fit, non-negative).

    Each source is a King profile (`king_profile`) of the point-spread
    function's width; only their counts are fitted, on the cutout of
    ``radius`` pixels around (``x0``, ``y0``).

    Parameters
    ----------
    counts, background : `~numpy.ndarray`
        (ny, nx) energy-integrated images.
    xs, ys : sequence of float
        Source positions (pixels).
    psf_sigma : float
        King sigma of the point-spread function (pixels).
    x0, y0, radius : float
        Centre and radius of the cutout (pixels).

    Returns
    -------
    amplitudes : `~numpy.ndarray`
        Fitted counts of each source.
    """
    ys_, xs_, xx, yy = _cutout(counts, x0, y0, radius)
    c = np.asarray(counts, float)[ys_, xs_].ravel()
    b = np.maximum(np.asarray(background, float)[ys_, xs_].ravel(), 1e-6)
    profiles = np.array([king_profile(xx, yy, x, y, psf_sigma) for x, y in zip(xs, ys)])

    def gain(amplitudes):
        mu = b + amplitudes @ profiles
        return np.sum(c * np.log(mu / b) - (mu - b)), mu

    amplitudes = np.zeros(len(profiles))
    value, mu = gain(amplitudes)
    for _ in range(50):  # projected Fisher scoring with step halving (the likelihood is concave)
        step = np.linalg.solve((profiles / mu) @ profiles.T + 1e-9 * np.eye(len(profiles)),
                               profiles @ (c / mu - 1))
        for _ in range(8):
            trial = np.maximum(amplitudes + step, 0.0)  # counts, not negative: a source or none
            value_t, mu_t = gain(trial)
            if value_t >= value:
                break
            step = step / 2
        else:
            break
        converged = value_t - value < 1e-4
        amplitudes, value, mu = trial, value_t, mu_t
        if converged:
            break
    return amplitudes


def fit_size(counts, background, points, i, psf_sigma, radius, binsz, merge):
    """The size of candidate ``i`` among ``points``: `fit_extension`, checked against its neighbours.

    A size found extended (``ts_ext >= EXTENDED_TS``) is fitted again with the
    other candidates inside the fit's cutout, farther than ``merge`` pixels (the
    same source), as point sources in the background, their counts fitted
    together with a point source at this candidate (`fit_points`). When the
    size is then no longer significant, the neighbours explain it and the
    second fit stands.

    Parameters
    ----------
    counts, background : `~numpy.ndarray`
        (ny, nx) energy-integrated images (native pixels).
    points : list of (float, float)
        Every candidate's position (pixels).
    i : int
        The candidate.
    psf_sigma, radius, binsz : float
        As `fit_extension` takes them.
    merge : float
        Candidates this close (pixels) are the same source.

    Returns
    -------
    ext : dict
        The `fit_extension` result that stands.
    wide_centroid : tuple of float or None
        The first fit's centroid when the neighbours explained its size, else None.
    """
    x, y = points[i]
    ext = fit_extension(counts, background, x, y, psf_sigma, radius, binsz)
    if ext["ts_ext"] < EXTENDED_TS:
        return ext, None
    neighbours = [(px, py) for k, (px, py) in enumerate(points) if k != i
                  and np.hypot(px - x, py - y) > merge and np.hypot(px - ext["x"], py - ext["y"]) < ext["radius"]]
    if not neighbours:
        return ext, None
    xs, ys = zip(*([(x, y)] + neighbours))
    amplitudes = fit_points(counts, background, xs, ys, psf_sigma, ext["x"], ext["y"], ext["radius"])
    yy, xx = np.indices(counts.shape)
    others = sum(a * king_profile(xx, yy, px, py, psf_sigma) for a, (px, py) in zip(amplitudes[1:], neighbours))
    given = fit_extension(counts, background + others, x, y, psf_sigma, radius, binsz)
    if given["ts_ext"] < EXTENDED_TS:
        return given, (ext["x"], ext["y"])
    return ext, None


def _cutout(image, x0, y0, radius):
    ny, nx = image.shape[-2:]
    r = int(np.ceil(radius))
    ix, iy = int(np.rint(x0)), int(np.rint(y0))
    ys = slice(max(iy - r, 0), min(iy + r + 1, ny))
    xs = slice(max(ix - r, 0), min(ix + r + 1, nx))
    yy, xx = np.mgrid[ys, xs]
    return ys, xs, xx.ravel().astype(float), yy.ravel().astype(float)


def _fit(counts, background, x0, y0, radius, log_sigma, fixed):
    ys, xs, xx, yy = _cutout(counts, x0, y0, radius)
    c = counts[ys, xs].reshape(1, -1).astype(float)
    b = np.maximum(background[ys, xs].reshape(1, -1).astype(float), 1e-6)
    near = (xx - x0) ** 2 + (yy - y0) ** 2 <= max(2 * np.exp(log_sigma), 3) ** 2
    excess = max(float((c[0] - b[0])[near].sum()), 1.0)
    start = np.array([x0, y0, log_sigma, np.log(excess)])
    width_range = (log_sigma, log_sigma) if fixed else (log_sigma, np.log(radius / 2))
    return _fit_profile(c, b, xx, yy, start, radius, width_range=width_range)


def fit_extension(counts, background, x0, y0, psf_sigma, radius, binsz, max_radius=None):
    """Fit the size of a candidate over a fixed background.

    Parameters
    ----------
    counts, background : `~numpy.ndarray`
        (ny, nx) energy-integrated images (native pixels).
    x0, y0 : float
        Start position (pixels), e.g. the point-source fit's.
    psf_sigma : float
        King sigma of the point-spread function (pixels).
    radius : float
        Starting cutout radius (pixels); it doubles while the fitted width
        exceeds a quarter of it, up to ``max_radius``.
    binsz : float
        Pixel size (deg).
    max_radius : float, optional
        Largest cutout radius (pixels). Default: `MAX_FIT_RADIUS_DEG`.

    Returns
    -------
    result : dict
        ``x``, ``y`` (pixels; the centroid), ``pos_err`` (pixels, 1 sigma per
        axis), ``extension`` and ``extension_err`` (deg), ``ts_ext``, ``ts``
        (of the extended model against background only), ``amplitude``
        (source counts), ``radius`` (pixels, the final cutout).
    """
    counts, background = np.asarray(counts, float), np.asarray(background, float)
    psf_sigma = max(float(psf_sigma), MIN_WIDTH)
    if max_radius is None:
        max_radius = MAX_FIT_RADIUS_DEG / binsz
    radius = max(float(radius), 4 * psf_sigma)
    log_psf = np.log(psf_sigma)
    x, y = float(x0), float(y0)
    while True:
        free = _fit(counts, background, x, y, radius, log_psf, fixed=False)
        x, y = free["params"][:2]
        sigma = float(np.exp(free["params"][2]))
        if sigma <= radius / 4 or radius >= max_radius:
            break
        radius = min(2 * radius, max_radius)
    point = _fit(counts, background, x, y, radius, log_psf, fixed=True)
    king = np.sqrt(max(sigma**2 - psf_sigma**2, 0.0))
    extension = king / KING_PER_GAUSSIAN_SIGMA * binsz
    # d(extension)/d(log sigma) = sigma^2 / king, in deg
    log_sigma_err = free.get("log_width_err", np.nan)
    extension_err = (sigma**2 / max(king, 1e-3)) * log_sigma_err / KING_PER_GAUSSIAN_SIGMA * binsz
    return dict(x=x, y=y, pos_err=free["pos_err"], extension=float(extension),
                extension_err=float(extension_err),
                ts_ext=float(max(free["ts"] - point["ts"], 0.0)), ts=float(free["ts"]),
                amplitude=float(np.exp(free["params"][3])), radius=float(radius))


#: A shell fit replaces the extension fit's centroid when it is better by this much
#: (2 dlogL on the same cutout; the shell has one parameter more: ~3 sigma).
SHELL_TS = 9.0
#: Cutouts of at least twice this radius (pixels; 0.8 deg on native pixels) are fitted on 2 x 2 blocks.
SHELL_BLOCK_RADIUS = 16


def shell_profile(xx, yy, x, y, radius, width, pixel=1.0):
    """Surface brightness of a projected spherical shell (gammapy's
    `~gammapy.modeling.models.ShellSpatialModel`), normalised to 1 over the plane.

    ``radius`` is the inner radius and ``width`` the shell's thickness, in the
    units of ``xx``, ``yy`` (pixels). Each value is the profile's mean over a
    radial interval of ``pixel`` around the point: what a pixel of that size
    holds, to first order. Sampled at points instead, the projected sphere's
    edge (an infinite slope) makes the pixel values jump as the shell moves
    by a fraction of a pixel; averaged, they change smoothly, which a fit by
    finite differences needs.
    """
    r = np.sqrt((xx - x) ** 2 + (yy - y) ** 2)
    outer = radius + width
    value = _sphere_chord_mean(r, outer, pixel) - _sphere_chord_mean(r, radius, pixel)
    return value * 3 / (2 * np.pi * (outer**3 - radius**3))


def _sphere_chord_mean(r, radius, pixel):
    """Mean of sqrt(radius^2 - t^2) (0 beyond ``radius``) for t over [r - pixel / 2, r + pixel / 2]."""
    def antiderivative(t):
        t = np.clip(t, -radius, radius)
        return 0.5 * (t * np.sqrt(np.maximum(radius**2 - t**2, 0)) + radius**2 * np.arcsin(t / radius))

    return (antiderivative(r + pixel / 2) - antiderivative(r - pixel / 2)) / pixel


def fit_shell(counts, background, x0, y0, size, psf_sigma, radius):
    """Poisson fit of a shell over a fixed background: centre, inner radius, width, counts.

    The profile is `shell_profile` blurred by a Gaussian of the point-spread
    function's width, fitted on the cutout of ``radius`` pixels around
    (``x0``, ``y0``) with the centre free within half of it. Started from a
    thin shell of outer radius ``1.25 size`` (a thin shell's Gaussian-equivalent
    size is ~0.8 of its radius).

    Parameters
    ----------
    counts, background : `~numpy.ndarray`
        (ny, nx) energy-integrated images.
    x0, y0 : float
        Start centre (pixels), e.g. the extension fit's centroid.
    size : float
        Gaussian-equivalent size of the candidate (pixels), e.g. its extension.
    psf_sigma : float
        Width of the point-spread function (pixels).
    radius : float
        Radius of the fitted cutout (pixels).

    Returns
    -------
    result : dict
        ``x``, ``y`` and ``pos_err`` (pixels, 1 sigma per axis from the
        curvature of the likelihood), ``radius`` and ``width`` (pixels),
        ``amplitude`` (source counts) and ``ts`` (against background only).
    """
    ys, xs, _, _ = _cutout(counts, x0, y0, radius)
    # a cutout of a degree or more is fitted on 2 x 2 pixel blocks: a quarter of the work, and a TS
    # at most as large as on pixels (a smooth profile loses little), so a shell is claimed no sooner
    block = 2 if radius >= 2 * SHELL_BLOCK_RADIUS else 1
    ny, nx = ((ys.stop - ys.start) // block, (xs.stop - xs.start) // block)

    def blocks(image):
        image = np.asarray(image, float)[ys, xs][: ny * block, : nx * block]
        return image.reshape(ny, block, nx, block).sum(axis=(1, 3)).ravel()

    c, b = blocks(counts), np.maximum(blocks(background), 1e-6)
    yy, xx = np.mgrid[:ny, :nx]
    xx = (xs.start + block * xx + (block - 1) / 2).ravel().astype(float)
    yy = (ys.start + block * yy + (block - 1) / 2).ravel().astype(float)
    blur = max(float(psf_sigma), MIN_WIDTH)
    outer = max(1.25 * float(size), 2 * blur)
    excess = max(float(np.sum(c - b)), 1.0)
    start = np.array([x0, y0, np.log(0.8 * outer), np.log(0.2 * outer), np.log(excess)])
    half = radius / 2
    bounds = [(x0 - half, x0 + half), (y0 - half, y0 + half), (np.log(MIN_WIDTH), np.log(radius)),
              (np.log(MIN_WIDTH), np.log(radius)), (np.log(0.1), np.log(1e7))]

    def npred(p):
        profile = shell_profile(xx, yy, p[0], p[1], np.exp(p[2]), np.exp(p[3]), pixel=block) * block**2
        return b + np.exp(p[4]) * gaussian_filter(profile.reshape(ny, nx), blur / block, mode="constant").ravel()

    def cash(p):
        mu = npred(p)
        return float(np.sum(mu - c * np.log(mu)))

    # finite differences over a fraction of a pixel: the profile is sampled at pixel centres
    fit = minimize(cash, start, method="L-BFGS-B", bounds=bounds, options=dict(eps=1e-3, maxiter=200))
    p = fit.x
    pos_err = _curvature_error(cash, p, step=0.25)
    value0 = float(np.sum(b - c * np.log(b)))
    return dict(x=float(p[0]), y=float(p[1]), pos_err=float(min(pos_err, radius)), radius=float(np.exp(p[2])),
                width=float(np.exp(p[3])), amplitude=float(np.exp(p[4])), ts=max(2 * (value0 - fit.fun), 0.0))


def _curvature_error(function, p, step):
    """1-sigma error per axis of the first two parameters (a position): the other parameters
    profiled out through the inverse of the numerical Hessian of ``function`` (-log L)."""
    n = len(p)
    steps = np.full(n, step)
    steps[2:] = 0.02  # log parameters
    hessian = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            def at(si, sj):
                q = p.copy()
                q[i] += si * steps[i]
                q[j] += sj * steps[j]
                return function(q)
            value = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / (4 * steps[i] * steps[j])
            hessian[i, j] = hessian[j, i] = value
    try:
        cov = np.linalg.inv(hessian)
    except np.linalg.LinAlgError:
        return np.inf
    variance = (cov[0, 0] + cov[1, 1]) / 2
    # not a minimum in every direction (a parameter at its bound): no error from the curvature
    return float(np.sqrt(variance)) if variance > 0 and np.all(np.linalg.eigvalsh(hessian) > 0) else np.inf
