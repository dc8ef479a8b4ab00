"""Cross-checks of hand-written numerics against the reference implementations.

* the finder's King-profile refinement (Fisher scoring in ``finders.fit_source``)
  against ``scipy.optimize.minimize`` of the same Poisson likelihood;
* ``preprocessing.NativeGrid`` (resampling to the networks' pixels) against
  gammapy's count-preserving resampling of the same map.
"""

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from gammapy.maps import Map, WcsGeom
from scipy.optimize import minimize

from gammapy_cnn.finders import KING_GAMMA, fit_source
from gammapy_cnn.preprocessing import NativeGrid

# --------------------------------------------------------------------------
# King-profile fit vs scipy
# --------------------------------------------------------------------------


def king(x, y, x0, y0, sigma, amplitude):
    """The source profile of finders.fit_source: a King function of gammapy's PSFKing shape."""
    u = ((x - x0) ** 2 + (y - y0) ** 2) / (2 * KING_GAMMA * sigma**2)
    return amplitude * (1 - 1 / KING_GAMMA) / (2 * np.pi * sigma**2) * (1 + u) ** -KING_GAMMA


def simulate_image(seed, x0, y0, sigma, amplitude, shape=(41, 41)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    background = 0.4 + 0.2 * xx / shape[1] + 0.1 * yy / shape[0]  # a gradient, not a constant
    expected = background + king(xx, yy, x0, y0, sigma, amplitude)
    return rng.poisson(expected).astype(float), background


def scipy_fit(counts, background, x0, y0, radius):
    """The same Poisson likelihood on the same cutout, minimised by scipy from several starts."""
    ny, nx = counts.shape
    r = int(np.ceil(radius))
    ix, iy = int(np.rint(x0)), int(np.rint(y0))
    ys, xs = slice(max(iy - r, 0), min(iy + r + 1, ny)), slice(max(ix - r, 0), min(ix + r + 1, nx))
    yy, xx = np.mgrid[ys, xs]
    xx, yy = xx.ravel().astype(float), yy.ravel().astype(float)
    c, b = counts[ys, xs].ravel(), background[ys, xs].ravel()

    def cash(p):
        mu = b + king(xx, yy, p[0], p[1], np.exp(p[2]), np.exp(p[3]))
        return np.sum(mu - c * np.log(mu))

    best = None
    for log_s in np.log([1.0, 2.0, 4.0]):
        for log_a in np.log([10.0, 100.0]):
            res = minimize(cash, [x0, y0, log_s, log_a], method="Nelder-Mead",
                           options=dict(xatol=1e-7, fatol=1e-9, maxiter=20000, maxfev=20000))
            if best is None or res.fun < best.fun:
                best = res
    null = np.sum(b - c * np.log(b))
    x, y, log_s, log_a = best.x
    return dict(x=x, y=y, sigma=np.exp(log_s), amplitude=np.exp(log_a), ts=2 * (null - best.fun))


@pytest.mark.parametrize("seed, x0, y0, sigma, amplitude", [
    (1, 20.3, 19.6, 2.0, 80.0),    # a clear source
    (2, 18.7, 21.2, 3.0, 300.0),   # bright and broad
    (3, 20.0, 20.4, 1.5, 40.0),    # faint
])
def test_king_fit_matches_scipy(seed, x0, y0, sigma, amplitude):
    """Fisher scoring reaches the maximum scipy finds, on images (one energy band).

    Tolerances: the Fisher scoring stops when a step gains < 1e-4 in log
    likelihood. Near the maximum ``delta logL = 0.5 (dx / pos_err)^2``, so the
    position can be off by ~sqrt(2e-4) pos_err = 0.014 pos_err; we allow
    0.05 pos_err (a hundredth of a pixel here, far below any astrophysical error).
    TS is 2 delta logL: both optimisers land within ~1e-3 of the maximum; we
    allow 0.01 absolute + 1e-4 relative. Width and amplitude are less
    constrained (flatter directions): 2 % and 1 %.
    """
    counts, background = simulate_image(seed, x0, y0, sigma, amplitude)
    start_x, start_y = x0 + 0.8, y0 - 0.6  # where a detection peak would put it, not the truth
    radius = 8.0
    ours = fit_source(counts, background, start_x, start_y, radius)
    ref = scipy_fit(counts, background, start_x, start_y, radius)

    assert ours["n_bands"] == 1
    assert ref["ts"] > 25  # a real detection, so the position is constrained
    assert abs(ours["x"] - ref["x"]) < 0.05 * ours["pos_err"]
    assert abs(ours["y"] - ref["y"]) < 0.05 * ours["pos_err"]
    assert abs(ours["ts"] - ref["ts"]) < 0.01 + 1e-4 * ref["ts"]
    assert ours["sigma"] == pytest.approx(ref["sigma"], rel=0.02)
    assert ours["amplitude"] == pytest.approx(ref["amplitude"], rel=0.01)
    # and the maximum is the right one: the fitted source is where it was simulated
    assert np.hypot(ours["x"] - x0, ours["y"] - y0) < 3 * ours["pos_err"] + 0.1


def test_king_fit_pos_err_is_the_curvature():
    """pos_err (Fisher information) matches the curvature of the profile likelihood scipy sees.

    The observed information at the maximum differs from the expected (Fisher)
    one by the Poisson noise of the residuals; for a bright source the two agree
    within ~15 %.
    """
    counts, background = simulate_image(5, 20.2, 20.1, 2.0, 400.0)
    radius = 8.0
    ours = fit_source(counts, background, 20.0, 20.0, radius)
    yy, xx = np.mgrid[:41, :41]
    sel = (np.abs(xx - 20) <= radius) & (np.abs(yy - 20) <= radius)
    c, b, xx, yy = counts[sel], background[sel], xx[sel].astype(float), yy[sel].astype(float)

    def cash(p):
        mu = b + king(xx, yy, p[0], p[1], np.exp(p[2]), np.exp(p[3]))
        return np.sum(mu - c * np.log(mu))

    p0 = np.array([ours["x"], ours["y"], np.log(ours["sigma"]), np.log(ours["amplitude"])])
    h = np.array([1e-3, 1e-3, 1e-4, 1e-4])
    hess = np.empty((4, 4))
    for i in range(4):
        for j in range(4):
            ei, ej = np.eye(4)[i] * h[i], np.eye(4)[j] * h[j]
            hess[i, j] = (cash(p0 + ei + ej) - cash(p0 + ei - ej) - cash(p0 - ei + ej)
                          + cash(p0 - ei - ej)) / (4 * h[i] * h[j])
    cov = np.linalg.inv(hess)
    observed = np.sqrt((cov[0, 0] + cov[1, 1]) / 2)
    assert ours["pos_err"] == pytest.approx(observed, rel=0.15)


# --------------------------------------------------------------------------
# NativeGrid vs gammapy's resampling
# --------------------------------------------------------------------------
CENTRE = SkyCoord(83.6, 22.0, unit="deg")
NATIVE = 0.025  # deg, the networks' pixels
BLOB = SkyCoord(83.9, 22.25, unit="deg")


def sky_counts(binsz, width=2.0):
    """Expected counts of one smooth sky (gradient + 0.15 deg Gaussian blob) on pixels of `binsz`."""
    geom = WcsGeom.create(skydir=CENTRE, width=width, binsz=binsz, frame="icrs")
    ra = geom.get_coord().skycoord.ra.deg
    sep = geom.separation(BLOB).deg
    density = 8000 * (1 + 0.3 * (ra - 83.6)) + 60000 * np.exp(-0.5 * (sep / 0.15) ** 2)  # per deg2
    return Map.from_geom(geom, data=density * geom.solid_angle().to_value("deg2"))


def native_geom(width=2.0):
    return WcsGeom.create(skydir=CENTRE, width=width, binsz=NATIVE, frame="icrs")


def centroid(image):
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    blob = np.clip(image - np.median(image), 0, None)
    return np.array([np.sum(xx * blob), np.sum(yy * blob)]) / blob.sum()


@pytest.mark.parametrize("binsz, how", [
    (0.0125, "downsample"),   # finer than native: 2x2 pixels -> 1
    (0.05, "upsample"),       # coarser: 1 pixel -> 2x2
    (0.02, "interp"),         # non-integer ratio (0.8)
])
def test_native_grid_matches_gammapy(binsz, how):
    """to_native on one sky equals gammapy's count-preserving resampling to the native geometry.

    NativeGrid uses a linear `scipy.ndimage.zoom` that aligns the centres of the
    corner pixels (not the pixel edges, as a WCS resampling does): it stretches
    the image by (n-1)/(m-1) ~ 1 %, i.e. at most half a pixel at the edges.
    Tolerances follow: per-pixel within 3 % of the peak, totals within 1 %, the
    blob's centroid within 0.25 native pixel.
    """
    sky = sky_counts(binsz)
    grid = NativeGrid(sky.geom)
    geom = native_geom()
    assert grid.native_shape == geom.data_shape
    ours = grid.to_native(sky.data)

    if how == "downsample":
        ref = sky.downsample(2, preserve_counts=True).data
    elif how == "upsample":
        # gammapy's upsample is piecewise constant: compare on the coarse pixels,
        # summing our native pixels back 2x2 (what preserve_counts means)
        ref = sky.data
        ours = Map.from_geom(geom, data=ours).downsample(2, preserve_counts=True).data
    else:
        ref = sky.interp_to_geom(geom, preserve_counts=True).data
    assert ours.shape == ref.shape

    assert ours.sum() == pytest.approx(sky.data.sum(), rel=0.01)
    assert ref.sum() == pytest.approx(sky.data.sum(), rel=0.01)
    np.testing.assert_allclose(ours, ref, atol=0.03 * ref.max())
    scale = 1 if how != "upsample" else 2  # native pixels per compared pixel
    assert np.hypot(*(centroid(ours) - centroid(ref))) * scale < 0.25


@pytest.mark.parametrize("binsz", [0.0125, 0.02, 0.05])
def test_native_grid_round_trip_and_positions(binsz):
    """from_native(to_native) keeps the counts; pix_from_native agrees with the WCS to half a pixel."""
    sky = sky_counts(binsz)
    grid = NativeGrid(sky.geom)
    back = grid.from_native(grid.to_native(sky.data))
    assert back.shape == sky.data.shape
    assert back.sum() == pytest.approx(sky.data.sum(), rel=0.01)
    np.testing.assert_allclose(back, sky.data, atol=0.03 * sky.data.max())

    geom = native_geom()
    iy, ix = np.mgrid[: geom.data_shape[0], : geom.data_shape[1]]
    x, y = grid.pix_from_native(ix.astype(float), iy.astype(float))
    ra_dec = geom.pix_to_coord((ix, iy))
    x_wcs, y_wcs = sky.geom.to_image().coord_to_pix(ra_dec)
    # corner-aligned zoom vs edge-aligned WCS: at most half a dataset pixel apart
    assert max(np.max(np.abs(x - x_wcs)), np.max(np.abs(y - y_wcs))) < 0.5 + 1e-6
    # and at the centre of the map they coincide
    centre = (geom.data_shape[0] // 2, geom.data_shape[1] // 2)
    assert np.hypot(x[centre] - x_wcs[centre], y[centre] - y_wcs[centre]) < 0.05


def test_native_grid_counts_map():
    """On a Poisson counts map the total is kept to within the (tiny) stretch of the zoom."""
    sky = sky_counts(0.0125)
    counts = np.random.default_rng(4).poisson(sky.data).astype(float)
    grid = NativeGrid(sky.geom)
    ours = grid.to_native(counts)
    ref = Map.from_geom(sky.geom, data=counts).downsample(2, preserve_counts=True).data
    assert ref.sum() == counts.sum()
    assert ours.sum() == pytest.approx(counts.sum(), rel=0.01)
    # locally: 8x8 native-pixel blocks (0.2 deg) agree within their Poisson noise
    block = lambda a: a.reshape(10, 8, 10, 8).sum(axis=(1, 3))  # noqa: E731
    diff = block(ours) - block(ref)
    assert np.all(np.abs(diff) < 4 * np.sqrt(block(ref)) + 5)
