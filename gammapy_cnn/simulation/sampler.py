"""Fast simulation of labelled counts maps, with gammapy as the physics.

Every map is centred on its pointing, so in pixel space the exposure,
background, PSF and energy dispersion do not depend on where the telescope
points. `SimulationTemplate` asks gammapy once per response for them
(`~gammapy.makers.MapDatasetMaker` on a reference observation of 1 s) and
tabulates the PSF and energy dispersion on a grid of offsets. A map then
costs a few array operations: scale the background, paste one PSF-convolved
source cutout per source, draw Poisson counts. `simulate_with_gammapy` does
the same map the slow way (``MapDataset.fake``), for the agreement tests.
"""

from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.data import FixedPointingInfo, Observation
from gammapy.datasets import MapDataset
from gammapy.makers import MapDatasetMaker
from gammapy.maps import MapAxis, WcsGeom
from gammapy.modeling.models import (
    DiskSpatialModel,
    FoVBackgroundModel,
    GaussianSpatialModel,
    PointSpatialModel,
    PowerLawSpectralModel,
    ShellSpatialModel,
    SkyModel,
)
from scipy.signal import fftconvolve

from ..utils import ENERGY_RANGE, NATIVE_BINSZ, NATIVE_ENERGY_NBIN, NATIVE_NPIX
from .io import BACKGROUND_FIELDS, background_model
from .irf import irf_label, load_irf
from .scenario import MORPHOLOGIES

__all__ = ["CRAB_AMPLITUDE", "SimulatedMap", "SimulationTemplate", "morphology_kernel",
           "simulate_with_gammapy"]

#: Amplitude at 1 TeV of "1 Crab" (HEGRA power law, Aharonian et al. 2004).
CRAB_AMPLITUDE = 2.83e-11 * u.Unit("cm-2 s-1 TeV-1")
REFERENCE_ENERGY = 1 * u.TeV
_OFFSET_STEP_DEG = 0.25
_OVERSAMPLE = 3


@dataclass
class SimulatedMap:
    """One simulated map: arrays have shape (n_energy, ny, nx)."""

    counts: np.ndarray
    signal: np.ndarray
    sources: list  # dicts: x, y, ra, dec, flux, index, extension, morphology, width, npred
    npred_background: float = 0.0  # total expected background counts
    npred_diffuse: float = 0.0  # total expected counts of the diffuse band (in ``signal``)


def _powerlaw_integral(edges_tev, index):
    """Integral of (E / 1 TeV)^-index over each bin, in TeV."""
    lo, hi = edges_tev[:-1], edges_tev[1:]
    if abs(index - 1) < 1e-9:
        return np.log(hi / lo)
    return (hi ** (1 - index) - lo ** (1 - index)) / (1 - index)


def morphology_kernel(morphology, extension, width, binsz):
    """Surface brightness of an extended source on the pixel grid, summing to 1.

    Odd-sized and centred on its middle pixel; each pixel is integrated on a
    3 x 3 sub-grid. Gaussian: sigma ``extension``, cut at 4 sigma. Disk:
    radius ``extension``. Shell: gammapy's `~gammapy.modeling.models.ShellSpatialModel`,
    the projection of a uniformly bright spherical shell of inner radius
    ``extension`` and width ``width`` (limb-brightened). All lengths in deg.
    """
    if morphology == "gaussian":
        half = 4 * extension
    elif morphology == "disk":
        half = extension
    elif morphology == "shell":
        half = extension + width
    else:
        raise ValueError(f"no kernel for morphology {morphology!r}")
    radius = int(np.ceil(half / binsz)) + 1
    sub = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    fine = (np.arange(-radius, radius + 1)[:, None] + sub[None, :]).ravel() * binsz
    r = np.hypot(fine[None, :], fine[:, None])
    if morphology == "gaussian":
        image = np.exp(-0.5 * (r / max(extension, 1e-6)) ** 2) * (r <= half)
    elif morphology == "disk":
        image = (r <= max(extension, binsz / (2 * _OVERSAMPLE))).astype(float)
    else:
        outer = extension + max(width, 1e-6)
        image = np.sqrt(np.clip(outer**2 - r**2, 0, None)) - np.sqrt(np.clip(extension**2 - r**2, 0, None))
    size = 2 * radius + 1
    image = image.reshape(size, _OVERSAMPLE, size, _OVERSAMPLE).sum(axis=(1, 3))
    return image / image.sum()


class SimulationTemplate:
    """Precomputed, pointing-independent response of one IRF on one geometry.

    Parameters
    ----------
    irf : str or `~pathlib.Path`
        Built-in response name or GADF file (see `~gammapy_cnn.simulation.load_irf`).
    npix : int
        Map width in pixels.
    binsz : `~astropy.units.Quantity`
        Pixel size.
    energy_axis : `~gammapy.maps.MapAxis`
        Reconstructed energy axis.
    """

    def __init__(self, irf, npix=NATIVE_NPIX, binsz=NATIVE_BINSZ, energy_axis=None):
        self.irf_name = str(irf)
        self.label = irf_label(irf)
        self.irfs = load_irf(irf)
        self.npix = int(npix)
        self.binsz = u.Quantity(binsz, "deg")
        if energy_axis is None:
            energy_axis = MapAxis.from_energy_bounds(*ENERGY_RANGE, nbin=NATIVE_ENERGY_NBIN, name="energy")
        self.energy_axis = energy_axis
        self.energy_axis_true = MapAxis.from_energy_bounds(
            energy_axis.edges[0] / 3, energy_axis.edges[-1] * 3, nbin=8, per_decade=True,
            name="energy_true",
        )
        reference = self.reference_dataset(SkyCoord(0, 0, unit="deg"), 1 * u.s)
        # Per second of livetime, shape (n_reco, ny, nx) and (n_true, ny, nx).
        self.background_rate = reference.background.data.astype(np.float64)
        self.exposure_rate = reference.exposure.quantity.to_value("cm2 s")
        self.mask = np.all(reference.background.data > 0, axis=0)
        self._tabulate_offsets()

    def geom(self, pointing):
        """Geometry of a map centred on ``pointing`` (a `SkyCoord`)."""
        return WcsGeom.create(
            skydir=pointing, npix=self.npix, binsz=self.binsz.value, frame="icrs",
            proj="TAN", axes=[self.energy_axis],
        )

    def reference_dataset(self, pointing, livetime):
        """Full gammapy `MapDataset` of one observation pointed at the map centre."""
        obs = Observation.create(
            pointing=FixedPointingInfo(fixed_icrs=pointing.icrs), livetime=livetime, irfs=self.irfs,
        )
        empty = MapDataset.create(
            self.geom(pointing), energy_axis_true=self.energy_axis_true,
            binsz_irf=0.25, rad_axis=None,
        )
        maker = MapDatasetMaker(selection=["exposure", "background", "psf", "edisp"])
        return maker.run(empty, obs)

    def _tabulate_offsets(self):
        """PSF radial profiles and energy-dispersion matrices on an offset grid."""
        max_offset = self.binsz.value * self.npix / np.sqrt(2)
        self.offsets = np.arange(0, max_offset + _OFFSET_STEP_DEG, _OFFSET_STEP_DEG)
        e_true = self.energy_axis_true.center
        self.psf_radius = np.linspace(0, 1.0, 1001)  # deg
        self.psf_profiles = []
        self.edisp_matrices = []
        edges = self.energy_axis.edges
        for offset in self.offsets:
            off = offset * u.deg
            profile = self.irfs["psf"].evaluate(
                energy_true=e_true[:, None], offset=off, rad=self.psf_radius[None, :] * u.deg
            ).to_value("deg-2")
            profile = np.nan_to_num(np.clip(profile, 0, None))
            norm = np.trapezoid(2 * np.pi * self.psf_radius * profile, self.psf_radius, axis=1)
            self.psf_profiles.append(profile / np.where(norm > 0, norm, 1)[:, None])
            kernel = self.irfs["edisp"].to_edisp_kernel(
                offset=off, energy_axis_true=self.energy_axis_true,
                energy_axis=MapAxis.from_energy_edges(edges, name="energy"),
            )
            self.edisp_matrices.append(kernel.pdf_matrix)
        self.psf_profiles = np.array(self.psf_profiles)
        self.edisp_matrices = np.array(self.edisp_matrices)

    def background(self, livetime, norm=1.0, tilt=0.0, gradient=0.0, gradient_angle=0.0,
                   acceptance_quadratic=0.0, acceptance_quartic=0.0):
        """True expected background counts, shape (n_energy, ny, nx); see `background_model`."""
        energy = self.energy_axis.center.to_value("TeV")
        coord = (np.arange(self.npix) - (self.npix - 1) / 2) * self.binsz.value
        return background_model(
            self.background_rate, energy, coord, livetime, norm, tilt, gradient, gradient_angle,
            acceptance_quadratic, acceptance_quartic,
        )

    def map_background(self, params):
        """True expected background counts of a map's `~gammapy_cnn.simulation.scenario.MapParameters`."""
        return self.background(*(getattr(params, name) for name in BACKGROUND_FIELDS))

    def source_npred(self, x, y, livetime, flux, index):
        """Expected counts per reconstructed energy bin of a source at pixel (x, y)."""
        ix = int(np.clip(np.rint(x), 0, self.npix - 1))
        iy = int(np.clip(np.rint(y), 0, self.npix - 1))
        edges = self.energy_axis_true.edges.to_value("TeV")
        amplitude = (flux * CRAB_AMPLITUDE).to_value("cm-2 s-1 TeV-1")
        npred_true = amplitude * _powerlaw_integral(edges, index) * self.exposure_rate[:, iy, ix]
        npred_true = npred_true * livetime
        k = self._offset_index(x, y)
        return npred_true, self.edisp_matrices[k], k

    def _offset_index(self, x, y):
        half = (self.npix - 1) / 2
        offset = np.hypot(x - half, y - half) * self.binsz.value
        return int(np.clip(np.rint(offset / _OFFSET_STEP_DEG), 0, len(self.offsets) - 1))

    def _psf_cutout(self, profiles, x, y, radius):
        """PSF of the energy-binned ``profiles`` (counts per deg2) centred on the
        sub-pixel position (x, y), integrated over the pixels of a
        (2 radius + 1)^2 cutout around pixel (round(x), round(y))."""
        binsz = self.binsz.value
        ix, iy = int(np.rint(x)), int(np.rint(y))
        sub = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
        grid = np.arange(-radius, radius + 1)
        fine = (grid[:, None] + sub[None, :]).ravel()
        rad = np.hypot((ix + fine - x)[None, :], (iy + fine - y)[:, None]) * binsz
        size = len(grid)
        cutout = np.empty((len(profiles), size, size))
        pixel_area = (binsz / _OVERSAMPLE) ** 2
        for j, profile in enumerate(profiles):
            values = np.interp(rad, self.psf_radius, profile, right=0) * pixel_area
            cutout[j] = values.reshape(size, _OVERSAMPLE, size, _OVERSAMPLE).sum(axis=(1, 3))
        return cutout

    def _paste(self, cutout, ix, iy):
        """A cutout centred on pixel (ix, iy) placed into an empty map cube."""
        size = cutout.shape[-1]
        radius = size // 2
        cube = np.zeros((len(cutout), self.npix, self.npix))
        y0, x0 = iy - radius, ix - radius
        ys = slice(max(y0, 0), min(y0 + size, self.npix))
        xs = slice(max(x0, 0), min(x0 + size, self.npix))
        if ys.start < ys.stop and xs.start < xs.stop:
            cube[:, ys, xs] = cutout[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
        return cube

    def _relative_exposure(self, npred_true, ix, iy):
        """Exposure of every pixel relative to pixel (ix, iy), weighted by the
        source's true-energy spectrum: an extended source is seen through the
        acceptance, like everything else in the field of view."""
        ix = int(np.clip(ix, 0, self.npix - 1))
        iy = int(np.clip(iy, 0, self.npix - 1))
        weights = npred_true / max(npred_true.sum(), 1e-300)
        weighted = np.tensordot(weights, self.exposure_rate, axes=1)
        return weighted / max(weighted[iy, ix], 1e-300)

    def source_cube(self, x, y, livetime, flux, index, extension=0.0, morphology=None, width=0.0):
        """Expected counts of one source, shape (n_energy, ny, nx).

        Parameters
        ----------
        x, y : float
            Centre in pixels.
        livetime : float
            Seconds.
        flux, index : float
            Total flux in Crab units and power-law index.
        extension : float
            Gaussian sigma, disk radius or shell inner radius, in deg.
        morphology : {"point", "gaussian", "disk", "shell"}, optional
            Default: "gaussian" if ``extension`` > 0, else "point".
        width : float
            Shell width in deg.
        """
        if morphology is None:
            morphology = "gaussian" if extension > 0 else "point"
        npred_true, edisp, k = self.source_npred(x, y, livetime, flux, index)
        weights = npred_true[:, None] * edisp  # (n_true, n_reco)
        profiles = weights.T @ self.psf_profiles[k]  # (n_reco, n_rad), counts per deg2
        radius = int(np.ceil(0.6 / self.binsz.value))
        cutout = self._psf_cutout(profiles, x, y, radius)
        if morphology != "point":
            kernel = morphology_kernel(morphology, extension, width, self.binsz.value)
            cutout = np.array([fftconvolve(plane, kernel, mode="full") for plane in cutout])
            cutout = np.clip(cutout, 0, None)
        ix, iy = int(np.rint(x)), int(np.rint(y))
        cube = self._paste(cutout, ix, iy)
        if morphology != "point":
            cube *= self._relative_exposure(npred_true, ix, iy)[None]
        return cube

    def diffuse_cube(self, diffuse, livetime):
        """Expected counts of a Galactic-plane-like band (`DiffuseParameters`), (n_energy, ny, nx)."""
        binsz = self.binsz.value
        coord = (np.arange(self.npix) - (self.npix - 1) / 2) * binsz
        xx, yy = np.meshgrid(coord, coord)
        normal = (-np.sin(diffuse.angle), np.cos(diffuse.angle))
        across = xx * normal[0] + yy * normal[1] - diffuse.offset
        along = xx * np.cos(diffuse.angle) + yy * np.sin(diffuse.angle)
        profile = np.exp(-0.5 * (across / diffuse.width) ** 2) / (np.sqrt(2 * np.pi) * diffuse.width)
        profile *= 1 + diffuse.modulation * np.sin(2 * np.pi * along / 2.0 + diffuse.phase)
        # Crab per deg2 times the pixel area: the band's flux in each pixel, in Crab
        pixel_flux = profile * diffuse.flux * binsz**2
        edges = self.energy_axis_true.edges.to_value("TeV")
        amplitude = CRAB_AMPLITUDE.to_value("cm-2 s-1 TeV-1")
        spectrum = amplitude * _powerlaw_integral(edges, diffuse.index) * livetime  # (n_true,)
        npred_true = spectrum[:, None, None] * self.exposure_rate * pixel_flux[None]
        reco = np.einsum("jr,jyx->ryx", self.edisp_matrices[0], npred_true)
        # One PSF per reconstructed energy, that of the band's spectrum on axis
        weights = (spectrum * self.exposure_rate[:, self.npix // 2, self.npix // 2])[:, None]
        profiles = (weights * self.edisp_matrices[0]).T @ self.psf_profiles[0]
        norm = np.trapezoid(2 * np.pi * self.psf_radius * profiles, self.psf_radius, axis=1)
        profiles = profiles / np.where(norm > 0, norm, 1)[:, None]
        centre = (self.npix - 1) // 2
        kernels = self._psf_cutout(profiles, centre, centre, int(np.ceil(0.4 / binsz)))
        return np.array([
            np.clip(fftconvolve(plane, kernel, mode="same"), 0, None)
            for plane, kernel in zip(reco, kernels)
        ])

    def simulate(self, params, rng):
        """Simulate one map.

        Parameters
        ----------
        params : `~gammapy_cnn.simulation.scenario.MapParameters`
        rng : `numpy.random.Generator`

        Returns
        -------
        sim : `SimulatedMap`
        """
        background = self.map_background(params)
        signal = np.zeros_like(background)
        half = (self.npix - 1) / 2
        geom = self.geom(SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg")).to_image()
        sources = []
        for src in params.sources:
            x = half + src.offset_x / self.binsz.value
            y = half + src.offset_y / self.binsz.value
            cube = self.source_cube(x, y, params.livetime, src.flux, src.index, src.extension,
                                    src.morphology, src.width)
            signal += cube
            coord = geom.pix_to_coord((np.array([x]), np.array([y])))
            sources.append(
                dict(x=x, y=y, ra=float(coord[0][0].to_value("deg")), dec=float(coord[1][0].to_value("deg")),
                     flux=src.flux, index=src.index, extension=src.extension,
                     morphology=MORPHOLOGIES.index(src.morphology), width=src.width,
                     npred=float(cube.sum()))
            )
        npred_diffuse = 0.0
        if params.diffuse is not None:
            band = self.diffuse_cube(params.diffuse, params.livetime)
            npred_diffuse = float(band.sum())
            signal += band
        counts = rng.poisson(np.clip(background + signal, 0, None))
        return SimulatedMap(counts=counts, signal=signal, sources=sources,
                            npred_background=float(background.sum()), npred_diffuse=npred_diffuse)


def spatial_model(source, lon, lat, frame="icrs"):
    """gammapy spatial model of a `~gammapy_cnn.simulation.SourceParameters` at (lon, lat)."""
    kwargs = dict(lon_0=lon, lat_0=lat, frame=frame)
    extension = source.extension * u.deg
    if source.morphology == "gaussian":
        return GaussianSpatialModel(sigma=extension, **kwargs)
    if source.morphology == "disk":
        return DiskSpatialModel(r_0=extension, **kwargs)
    if source.morphology == "shell":
        return ShellSpatialModel(radius=extension, width=source.width * u.deg, **kwargs)
    return PointSpatialModel(**kwargs)


def simulate_with_gammapy(template, params, seed):
    """Simulate the same map with gammapy's full machinery (``MapDataset.fake``).

    Slow (~0.5 s); the reference for the fast path. The spatial background
    gradient and acceptance change are not supported here (gammapy's FoV
    background model has neither).

    Returns
    -------
    dataset : `~gammapy.datasets.MapDataset`
        With the fake counts and the models used.
    """
    if params.background_gradient:
        raise ValueError("simulate_with_gammapy does not model background_gradient; set it to 0")
    if params.acceptance_quadratic or params.acceptance_quartic:
        raise ValueError("simulate_with_gammapy does not model the acceptance change; set "
                         "acceptance_quadratic and acceptance_quartic to 0")
    if params.diffuse is not None:
        raise ValueError("simulate_with_gammapy does not model the diffuse band; set diffuse to None")
    pointing = SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg")
    dataset = template.reference_dataset(pointing, params.livetime * u.s)
    geom = dataset.counts.geom.to_image()
    half = (template.npix - 1) / 2
    models = [FoVBackgroundModel(dataset_name=dataset.name)]
    models[0].spectral_model.norm.value = params.background_norm
    models[0].spectral_model.tilt.value = params.background_tilt
    for i, src in enumerate(params.sources):
        x = half + src.offset_x / template.binsz.value
        y = half + src.offset_y / template.binsz.value
        coord = geom.pix_to_coord((np.array([x]), np.array([y])))
        lon, lat = coord[0][0], coord[1][0]
        spatial = spatial_model(src, lon, lat)
        spectral = PowerLawSpectralModel(
            index=src.index, amplitude=src.flux * CRAB_AMPLITUDE, reference=REFERENCE_ENERGY
        )
        models.append(SkyModel(spatial_model=spatial, spectral_model=spectral, name=f"src{i}"))
    dataset.models = models
    dataset.fake(random_state=int(seed))
    return dataset
