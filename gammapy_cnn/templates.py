"""The template path: a run's IRF background, normalised outside an exclusion mask found in its counts.

For sources larger than a counts-only estimate keeps (``docs/results/extended_sources.md``),
where the instrument's background model is trusted: `background_template` evaluates a run's
IRF background on a counts geometry, and `AutoExclusionFoVBackgroundMaker` normalises it with
gammapy's `~gammapy.makers.FoVBackgroundMaker` outside the significant excesses of the counts
(one sky mask for the runs of a stack). No network is involved; `~gammapy_cnn.CNNSourceFinder`
with ``background_network=None`` searches on the result.
"""

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle
from gammapy.datasets import Datasets
from gammapy.makers import MAKER_REGISTRY, FoVBackgroundMaker, Maker, MapDatasetMaker
from gammapy.maps import Map, MapAxis

from .background import away_from_excesses
from .preprocessing import counts_image, energy_integrated_image
from .runs import as_dataset_list, common_geom, reproject_counts, reproject_mask
from .utils import NATIVE_BINSZ

__all__ = ["AutoExclusionFoVBackgroundMaker", "background_template"]


def background_template(observation, geom):
    """The observation's IRF background on ``geom``, in counts: the template that
    `~gammapy_cnn.templates.AutoExclusionFoVBackgroundMaker` normalises.

    gammapy's `~gammapy.makers.MapDatasetMaker` evaluates it (pointing, livetime,
    reconstructed energy) on 10 energy bins per decade from the lowest energy
    node where the IRF is positive, summed into ``geom``'s bins: its log-log
    integration over a bin with a zero edge gives NaN or absurd values (the
    real-time maps' single 0.03-100 TeV bin, where the IRF is zero at low
    energies), and a value above what the IRF's largest rate could give in
    the bin is such an artefact and dropped. Only the template's shape
    matters there: its norm is fitted.

    Parameters
    ----------
    observation : `~gammapy.data.Observation`
        With a background IRF (``bkg``).
    geom : `~gammapy.maps.WcsGeom`
        Counts geometry with a reconstructed ``energy`` axis.

    Returns
    -------
    background : `~gammapy.maps.WcsNDMap`
        Expected background counts on ``geom``.

    Raises
    ------
    ValueError
        If the observation has no background IRF (the message names it).
    """
    if getattr(observation, "bkg", None) is None:
        raise ValueError(f"observation {observation.obs_id} has no background IRF: a background "
                         "template needs one (or estimate the background from the counts: CNNBackgroundMaker)")
    bkg = observation.bkg
    positive = np.asarray(bkg.data).reshape(len(bkg.axes["energy"].center), -1).max(axis=1) > 0
    edges = geom.axes["energy"].edges.to_value("TeV")
    data = np.zeros(geom.data_shape)
    lowest = max(bkg.axes["energy"].center[np.argmax(positive)].to_value("TeV"), edges[0]) if positive.any() else np.inf
    if lowest >= edges[-1]:  # no background in the map's energy range
        return Map.from_geom(geom, data=data)
    decades = np.log10(edges[-1] / lowest)
    fine = np.geomspace(lowest, edges[-1], int(np.ceil(10 * decades)) + 1)
    fine = np.union1d(fine, edges[(edges > lowest) & (edges < edges[-1])])
    fine_geom = geom.to_image().to_cube([MapAxis.from_energy_edges(fine * u.TeV, name="energy")])
    with np.errstate(over="ignore", invalid="ignore"):  # far outside the IRF's offsets: dropped below
        values = MapDatasetMaker(selection=["background"]).make_background(fine_geom, observation).data
    most = (np.nanmax(bkg.data) * bkg.unit * np.diff(fine)[:, None, None] * u.TeV
            * geom.to_image().solid_angle() * observation.observation_time_duration).to_value("")
    values = np.where(np.isfinite(values) & (values <= most), values, 0.0)
    index = np.searchsorted(edges, fine[:-1] * (1 + 1e-9), side="right") - 1
    np.add.at(data, index, values)
    return Map.from_geom(geom, data=data)


class AutoExclusionFoVBackgroundMaker(Maker):
    """gammapy's field-of-view background with the exclusion mask found in the counts.

    The dataset's own ``background`` (the IRF template, e.g. from gammapy's
    `~gammapy.makers.MapDatasetMaker`) is normalised to the counts by
    `~gammapy.makers.FoVBackgroundMaker` outside an exclusion mask, as
    usual; the mask is not drawn by hand but found in the counts: the pixels
    with a significant excess (5 sigma at 0.1, 0.3 or 0.6 deg smoothing, widened
    by the smoothing; `~gammapy_cnn.background.away_from_excesses`) over the
    current estimate, found again after each normalisation until they no
    longer change. Given `~gammapy.datasets.Datasets` (one per run), the
    mask is one sky mask for all of them, found on their stack: emission
    that no run shows alone is still left out of every run's
    normalisation. No network is involved.

    It is the method for sources larger than what a counts-only estimate can
    keep: `CNNBackgroundMaker` lets the acceptance's shape follow the counts,
    so an excess that is not significant enough to be left out of its refits
    (a faint 1 deg shell in each of several wobbled runs, a Gaussian of
    sigma 0.7 deg or more) is partly taken as acceptance. A template fixes
    the shape, and only its normalisation is fitted (``docs/results/extended_sources.md``).
    It is only as good as the template: use it with an instrument's
    background model, not as a real-time default. Pair it with
    ``CNNSourceFinder(background_network=None)``, which then uses the
    datasets' backgrounds (``gammapy-cnn find --background-network template``).

    Parameters
    ----------
    method : {"scale", "fit"}
        `~gammapy.makers.FoVBackgroundMaker`'s: the norm alone (default), or
        norm and spectral tilt fitted.
    exclusion_mask : `~gammapy.maps.WcsNDMap`, optional
        Regions known in advance to leave out too (True where the counts may
        be used, gammapy's convention), on any sky geometry.
    max_iterations : int
        At most this many normalisations (each after a new excess search). Default 5.
    excess_scales : `~astropy.coordinates.Angle`
        Gaussian widths at which excesses are looked for. Default 0.1, 0.3 and
        0.6 deg: the widest reaches the faint wings of a source of a degree
        (a 1 deg Gaussian at 1800 s: 0.93-0.99 of its excess kept on three
        responses, 0.55-0.64 with the CNN maker's 0.1 and 0.3 deg).

    Examples
    --------
    >>> from gammapy_cnn import CNNSourceFinder
    >>> from gammapy_cnn.templates import AutoExclusionFoVBackgroundMaker
    >>> runs = AutoExclusionFoVBackgroundMaker().run(irf_datasets)  # doctest: +SKIP
    >>> CNNSourceFinder(background_network=None)(runs)  # doctest: +SKIP
    """

    tag = "AutoExclusionFoVBackgroundMaker"

    def __init__(self, method="scale", exclusion_mask=None, max_iterations=5,
                 excess_scales=Angle([0.1, 0.3, 0.6], "deg")):
        if method not in ("scale", "fit"):
            raise ValueError(f"method is 'scale' or 'fit', got {method!r}")
        self.method = method
        self.exclusion_mask = exclusion_mask
        if int(max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        self.max_iterations = int(max_iterations)
        try:
            scales = Angle(np.atleast_1d(u.Quantity(excess_scales)))
        except (TypeError, ValueError, u.UnitsError):
            raise ValueError(f"excess_scales must be angles, got {excess_scales!r}") from None
        if not len(scales) or not np.all(scales > 0):
            raise ValueError(f"excess_scales must be positive angles, got {excess_scales!r}")
        self.excess_scales = scales

    def run(self, dataset, observation=None):
        """The dataset with its template normalised outside the excesses found in its counts.

        Parameters
        ----------
        dataset : `~gammapy.datasets.MapDataset` or `~gammapy.datasets.Datasets`
            With counts and a background template. For `Datasets` (one per run) the
            exclusion mask is found once, on their stack, and each run's norm is
            fitted to its own counts outside it.
        observation : `~gammapy.data.Observation`, optional
            Not used (the `~gammapy.makers.Maker` interface).

        Returns
        -------
        dataset : `~gammapy.datasets.MapDataset` or `~gammapy.datasets.Datasets`
            A copy with a `~gammapy.modeling.models.FoVBackgroundModel` whose norm
            is fitted, the input's ``mask_fit``, and an all-True ``mask_safe`` where
            the input had none.

        Raises
        ------
        ValueError
            If a dataset has no background template (the message names it), or
            ``exclusion_mask`` leaves no valid pixel.
        """
        runs = as_dataset_list(dataset) if isinstance(dataset, (Datasets, list, tuple)) else [dataset]
        for run in runs:
            if run.background is None:
                raise ValueError(
                    f"dataset {run.name!r} has no background template: make it with gammapy's "
                    "MapDatasetMaker (selection with 'background'), or estimate it from the counts "
                    "with CNNBackgroundMaker"
                )
        # one sky mask for all runs, searched on their stack: a source too faint for any run
        # alone is still left out of every run's normalisation
        sky = common_geom(runs)
        counts, mask = np.zeros(sky.data_shape), np.zeros(sky.data_shape, bool)
        for run in runs:
            run_counts, run_mask = counts_image(run)
            counts += _on_sky(run_counts * run_mask, run, sky)
            mask |= run_mask if run.counts.geom.to_image() == sky else reproject_mask(
                run_mask, run.counts.geom.to_image(), sky)
        known = np.ones(sky.data_shape, bool)
        if self.exclusion_mask is not None:
            known = self.exclusion_mask.interp_to_geom(sky, method="nearest").data.astype(bool)
            if not (known & mask).any():
                raise ValueError(f"the exclusion mask leaves no valid pixel of {[r.name for r in runs]} "
                                 "to normalise the background template on")
        runs = [_with_safe_mask(run) for run in runs]
        scales = tuple((self.excess_scales / NATIVE_BINSZ).to_value(""))  # `sky` has native pixels
        keep, estimates = known, None
        for _ in range(self.max_iterations):
            estimates = [self._normalised(run, keep, sky) for run in runs]
            background = sum(_on_sky(_energy_integrated(e.npred_background(), e.mask_safe), e, sky)
                             for e in estimates)
            found = away_from_excesses(counts, background, mask, scales) | ~mask
            found &= known
            if np.array_equal(found, keep):
                break
            keep = found
        return Datasets(estimates) if isinstance(dataset, (Datasets, list, tuple)) else estimates[0]

    def _normalised(self, run, keep, sky):
        """A copy of ``run`` with its template normalised outside ``~keep`` (a mask on ``sky``).

        The mask goes in as the copy's ``mask_fit`` (with the run's own), not as the
        `~gammapy.makers.FoVBackgroundMaker`'s exclusion mask, which it would interpolate
        to the run's pixels at every call (~60 ms for a 200 x 200 map)."""
        image = run.counts.geom.to_image()
        on_run = keep if image == sky else reproject_mask(keep, sky, image)
        fit = np.broadcast_to(on_run, run.counts.geom.data_shape)
        if run.mask_fit is not None:
            fit = fit & np.asarray(run.mask_fit.data, bool)
        # gammapy's maker changes the dataset it is given: a fresh copy each time
        copy = run.copy(name=run.name)
        copy.mask_fit = Map.from_geom(run.counts.geom, data=fit, dtype=bool)
        estimate = FoVBackgroundMaker(method=self.method).run(copy)
        estimate.mask_fit = run.mask_fit
        return estimate


def _on_sky(image, dataset, sky):
    """An image on the dataset's pixels moved onto ``sky`` (counts conserved; as is when they are the same)."""
    own = dataset.counts.geom.to_image()
    return image if own == sky else reproject_counts(image, own, sky)[0]


def _with_safe_mask(dataset):
    """The dataset, or a copy with an all-True ``mask_safe`` where it has none (every pixel valid,
    this package's convention): gammapy's FoV maker needs one to mask a failed normalisation."""
    if dataset.mask_safe is not None:
        return dataset
    with_mask = dataset.copy(name=dataset.name)
    with_mask.mask_safe = Map.from_geom(dataset.counts.geom, data=True, dtype=bool)
    return with_mask


def _energy_integrated(cube, mask_safe):
    """`~gammapy_cnn.preprocessing.energy_integrated_image` as a (ny, nx) array."""
    return energy_integrated_image(cube, mask_safe).data.reshape(cube.geom.data_shape[-2:])


MAKER_REGISTRY.append(AutoExclusionFoVBackgroundMaker)
