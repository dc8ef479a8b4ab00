"""`CNNBackgroundMaker`: the background of a `MapDataset` from its counts alone."""

import copy
import logging
import warnings

import numpy as np
from astropy.utils import lazyproperty
from gammapy.datasets import Datasets, SpectrumDataset
from gammapy.makers import MAKER_REGISTRY, Maker
from gammapy.maps import Map, RegionNDMap
from gammapy.modeling.models import FoVBackgroundModel, Models
from scipy.ndimage import gaussian_filter

from .background import fit_to_counts, split_in_energy
from .data import counts_dataset, counts_geom
from .networks import ORIGINAL, load_network
from .preprocessing import (
    MIN_NATIVE_PIXELS,
    NativeGrid,
    counts_level,
    native_images,
    normalise,
    original_stretch,
    pad,
    padded_window,
)
from .runs import (
    RUN_FRAME_TOLERANCE,
    WOBBLE_WARNING_SPREAD,
    as_dataset_list,
    mean_direction,
    meta_pointings,
    reproject_counts,
    reproject_mask,
    run_geom,
    wobble_spread,
)
from .utils import NATIVE_BINSZ, NATIVE_NPIX

__all__ = ["CNNBackgroundMaker", "PartialFieldWarning", "WobbleStackWarning", "warn_if_wobble_stack"]

log = logging.getLogger(__name__)

#: Least fraction of a run's frame (5 x 5 deg around its pointing) its map must hold valid
#: before a `PartialFieldWarning`: the 2.5 deg field is 79% of the frame; a wobbled run on a 5 deg
#: map centred 0.5 / 1.5 deg away holds 75% / 59%; the cut runs of a false source, 45% and 35%.
MIN_FRAME_COVERAGE = 0.5

#: Width (native pixels) of the smoothing of the cleaned excess map: 0.05 deg.
CLEAN_SMOOTHING_PIXELS = 2.0


class CNNBackgroundMaker(Maker):
    """Estimate the background of a map dataset from its counts, with a CNN.

    No background template, exposure, IRF, exclusion mask or source position is
    needed: the network has learned from simulations what a background looks
    like (smooth, following the camera acceptance) and what sources look like.
    The returned dataset carries the estimate as its ``background``, so
    `~gammapy.estimators.ExcessMapEstimator`, aperture photometry and
    `~gammapy.modeling.Fit` use it as they are.

    Maps of any WCS geometry are accepted: the counts are resampled to the
    network's native 0.025 deg pixels when needed and the estimate is
    resampled back, conserving counts. The network is fully convolutional, so
    any map shape works, from 0.8 x 0.8 deg up to 4096 x 4096 input pixels
    (`~gammapy_cnn.preprocessing.MAX_PIXELS`); maps wider than 1408 native
    pixels run in overlapping tiles, with the same result and bounded memory.
    Pixels must be square and at most 0.2 deg. All-zero counts give a flat
    background of half a count in total.

    The network predicts the shape and level of the background from the
    counts; its normalisation is then refit to the counts outside significant
    excesses (5 sigma, 0.1 deg smoothing), as `~gammapy.makers.FoVBackgroundMaker`
    does with a template. That removes a ~4% deficit the network learnt from
    training maps whose counts included sources (median ratio to the true
    background 0.96 -> 1.00 on held-out simulations). When the counts demand
    it (likelihood gain >= 25, i.e. long exposures), a smooth factor is refit
    too: a radial acceptance (piecewise linear, knots every 0.5 deg on a
    5 deg map) and a gradient, with the excesses found again after the
    correction. It corrects an acceptance shape that differs from the
    training IRFs (CTA 1DC South, 1800 s: empty-field significance mean
    0.65 without it, 0.29 with a quadratic factor, 0.02 with this one, on
    150 held-out maps). When the counts hold significant excesses (5 sigma at
    0.1 or 0.3 deg smoothing), the network sees the map a second time with
    them filled in by this first estimate, and the refit is repeated: the
    network discounts a large source only in part, and the second pass sees
    none (a 1 Crab Gaussian of sigma 0.5 deg at 1800 s: 0.89 -> 0.97 of the
    true excess kept; ``docs/results/extended_sources.md``).

    For a dataset with an energy axis, the network sees the counts summed over
    the energy bins inside ``mask_safe``; the background in each energy bin is
    that image times the energy spectrum of the counts measured away from
    significant excesses, and where a bin's counts demand it, its share gets
    its own smooth shape about the pointing: the acceptance widens with
    energy (`~gammapy_cnn.background.split_in_energy`). Spectra agree with
    reflected regions on H.E.S.S. data (``docs/results/hess_spectra.md``).

    Parameters
    ----------
    network : str or `~pathlib.Path`
        Shipped network name (``"default"``, ``"original"``; ``"seed"`` is an
        alias of ``"original"``) or path of a ``.keras`` file with its model
        card. Default is ``"default"``.
    batch_size : int
        Maps per network call when given several datasets.

    Examples
    --------
    >>> from gammapy_cnn import CNNBackgroundMaker
    >>> maker = CNNBackgroundMaker()  # doctest: +SKIP
    >>> dataset = maker.run(counts_only_dataset)  # doctest: +SKIP
    >>> dataset.npred_background().data.sum()  # doctest: +SKIP
    """

    tag = "CNNBackgroundMaker"

    def __init__(self, network="default", batch_size=32):
        self.network = network
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)

    def __deepcopy__(self, memo):
        """A copy whose loaded network (learned, read-only state) is shared, not duplicated."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__dict__.update({key: value if key == "network_" else copy.deepcopy(value, memo)
                             for key, value in self.__dict__.items()})
        return new

    def copy(self):
        """A copy of the maker (`~copy.deepcopy`; the loaded network is shared)."""
        return copy.deepcopy(self)

    def __str__(self):
        return f"{self.__class__.__name__}\n\n\tnetwork : {self.network}\n"

    @lazyproperty
    def network_(self):
        """The loaded `~gammapy_cnn.networks.Network` (learned state; ``network`` is its name or file)."""
        return load_network("cleaner", self.network)

    def estimate_background(self, counts, mask, network_output=None):
        """Background of native-grid counts images.

        Parameters
        ----------
        counts, mask : `~numpy.ndarray`
            (n, ny, nx) energy-integrated counts and validity masks on 0.025 deg pixels.
        network_output : `~numpy.ndarray`, optional
            The network's output on these images (`~gammapy_cnn.preprocessing.normalise`
            and `~gammapy_cnn.preprocessing.pad` applied), when already computed:
            `CNNSourceFinder` runs it in one call with its own network.

        Returns
        -------
        background : `~numpy.ndarray`
            (n, ny, nx) expected background counts.
        """
        counts, mask = _checked_images(counts, mask)
        if self.network_.architecture == ORIGINAL:
            return self._estimate_original(counts, mask)[0]
        background, level = self._network_background(counts, mask, network_output)
        # Without a single count the network has nothing to see: the estimate is
        # flat at the prior level (half a count over the valid pixels).
        empty = counts.sum(axis=(1, 2)) == 0
        background[empty] = level[empty, None, None] * mask[empty]
        without_excesses, kept = {}, {}
        for i in np.nonzero(~empty)[0]:
            background[i], kept[i] = fit_to_counts(counts[i], background[i], mask[i])
            if kept[i].sum() < mask[i].sum():
                without_excesses[i] = np.where(kept[i], counts[i], background[i])
        if without_excesses:
            # The network discounts a large source only in part (a 0.5 deg Gaussian:
            # ~2% too much background under it), so it sees those maps once more with
            # their significant excesses filled in by the first estimate: a sky without them.
            pick = list(without_excesses)
            again, _ = self._network_background(np.array(list(without_excesses.values())), mask[pick])
            for i, network_background in zip(pick, again):
                second, keep = fit_to_counts(counts[i], network_background, mask[i])
                # a second look that finds more "excess" explains the counts worse: keep the first
                if keep.sum() >= 0.9 * kept[i].sum():
                    background[i] = second
        return background

    def _network_background(self, counts, mask, network_output=None):
        """The network's background before any refit, and the counts' level (`normalise`);
        ``network_output``: as in `estimate_background`."""
        if network_output is None:
            x, level = normalise(counts, mask)
            x, window = pad(x)
            network_output = self.network_.predict(x, batch_size=self.batch_size)
        else:
            level, window = counts_level(counts, mask), padded_window(counts.shape[-2:])
        background = network_output[(slice(None),) + window + (0,)] * level[:, None, None] * mask
        if not np.all(np.isfinite(background)):
            # seen with barely trained networks on maps far from their training: refuse, not propagate
            raise ValueError(f"the cleaner network {self.network!r} gave non-finite values for these counts; "
                             "its background cannot be used (is the network trained?)")
        return background, level

    def estimate_image(self, counts, mask):
        """Background and cleaned excess of native-grid counts images.

        Takes the arrays `estimate_background` takes and returns two (n, ny, nx)
        arrays: its background, and the excess counts (counts minus background)
        smoothed by a 0.05 deg Gaussian.
        """
        counts, mask = _checked_images(counts, mask)
        if self.network_.architecture == ORIGINAL:
            return self._estimate_original(counts, mask)
        background = self.estimate_background(counts, mask)
        return background, _smoothed_excess(counts, background, mask)

    def _estimate_original(self, counts, mask):
        """The original CNN-Cleaner, with its [0, 1] stretch undone as well as it can be.

        Its output is a cleaned image in [0, 1] whose scale is lost; we take the
        median pixel as zero excess and the input's stretch as the scale.
        """
        if counts.shape[-2:] != (NATIVE_NPIX, NATIVE_NPIX):
            raise ValueError(f"the original cleaner only takes {NATIVE_NPIX} x {NATIVE_NPIX} maps "
                             f"of {NATIVE_BINSZ} pixels")
        x, low, high = original_stretch(counts)
        pred = self.network_.predict(x[..., None], batch_size=self.batch_size)[..., 0]
        smooth = x * (high - low) + low
        cleaned = (pred - np.median(pred, axis=(-2, -1), keepdims=True)) * (high - low)
        background = np.clip(smooth - cleaned, 0, None) * mask
        return background, cleaned * mask

    def _background_image(self, dataset):
        """Energy-integrated counts, mask and background image on the dataset's pixels.

        A one-run dataset whose map is not centred on its pointing is
        estimated in its run frame (`~gammapy_cnn.runs.run_geom`), where the
        networks learnt the acceptance; pixels that frame does not cover are
        left out of the returned mask.
        """
        grid, counts, mask, native_counts, native_mask = native_images(dataset)
        frame = _run_frame(dataset)
        if frame is None:
            background = self.estimate_background(native_counts[None], native_mask[None])
            return counts, mask, np.clip(grid.from_native(background[0]), 0, None) * mask
        image = dataset.counts.geom.to_image()
        run_counts, _ = reproject_counts(counts * mask, image, frame)
        run_mask = reproject_mask(mask, image, frame)
        off_pointing = frame.center_skydir.separation(image.center_skydir) >= RUN_FRAME_TOLERANCE
        if off_pointing and run_mask.mean() < MIN_FRAME_COVERAGE:  # (a small map's own frame: its size)
            warnings.warn(
                f"dataset {dataset.name!r}: its map holds {100 * run_mask.mean():.0f}% of the 5 x 5 deg "
                "field around its run's pointing, so its CNN background is extrapolated from part of "
                "the field (real runs cut that way gave a 23 sigma false source in a stack); give each "
                "run a map that holds its field (gammapy-cnn find --stack does).",
                PartialFieldWarning, stacklevel=4,
            )
        background = self.estimate_background(run_counts[None], run_mask[None])[0]
        background, coverage = reproject_counts(background, frame, image)
        mask = mask & (coverage > 0.5)
        return counts, mask, np.clip(background, 0, None) * mask

    def clean(self, dataset):
        """The cleaned excess map: counts minus CNN background, smoothed (0.05 deg Gaussian).

        This is what the original CNN-Cleaner produced, but in counts per
        pixel (the smoothing kernel is normalised, so sums over an aperture are
        excess counts).

        Parameters
        ----------
        dataset : `~gammapy.datasets.MapDataset`

        Returns
        -------
        cleaned : `~gammapy.maps.Map`
            2D map on the dataset's image geometry.
        """
        grid, _, mask, native_counts, native_mask = native_images(dataset)
        _, cleaned = self.estimate_image(native_counts[None], native_mask[None])
        cleaned = grid.from_native(cleaned[0]) * mask
        return Map.from_geom(dataset.counts.geom.to_image(), data=cleaned, unit="")

    def run(self, dataset, observation=None):
        """Return a copy of ``dataset`` whose background is the CNN estimate.

        Given `~gammapy.datasets.Datasets` (one dataset per run), each run is
        estimated on its own, as gammapy's `~gammapy.analysis.Analysis` does:
        the background of their stack (``Datasets.stack_reduce()``) is the
        sum of per-run estimates. A run whose map is not centred on its
        pointing (read from ``meta_table``'s ``RA_PNT``/``DEC_PNT``) is
        estimated on a map centred on it, where the networks learnt the
        acceptance, and the estimate is resampled back (counts conserved);
        pixels of the dataset's map outside that 5 x 5 deg run frame get
        ``mask_safe = False``. A single dataset that records several
        pointings more than 0.2 deg apart is a stack of wobbled runs: it is
        estimated as one map, with a warning naming the per-run path.

        A `~gammapy.datasets.SpectrumDataset` (1D, an ON region) takes the
        background the network estimates on the run's whole field of view: a
        counts map of ``observation``'s events centred on its pointing
        (`gammapy_cnn.data.counts_dataset`, the spectrum's energy axis, safe
        within 2.5 deg of the pointing), summed over the pixels whose centres
        lie in the ON region and scaled by the region's solid angle over
        theirs. It is the CNN's answer to gammapy's reflected regions.

        Parameters
        ----------
        dataset : `~gammapy.datasets.MapDataset`, `~gammapy.datasets.SpectrumDataset` or `~gammapy.datasets.Datasets`
            Needs counts; ``mask_safe`` is respected. Exposure, IRFs and an
            existing background are kept but not used (an existing background
            is replaced).
        observation : `~gammapy.data.Observation`, optional
            The events of a `~gammapy.datasets.SpectrumDataset`'s run (needed
            there); not used for map datasets, whose counts are all the
            estimate needs.

        Returns
        -------
        dataset : `~gammapy.datasets.MapDataset`, `~gammapy.datasets.SpectrumDataset` or `~gammapy.datasets.Datasets`
            Same name and geometry; ``background`` in counts. `Datasets` for
            `Datasets`.

        Raises
        ------
        ValueError
            For a `~gammapy.datasets.SpectrumDataset`: no observation, or an
            ON region outside the run's safe field of view.
        """
        if isinstance(dataset, (Datasets, list, tuple)):
            return Datasets([self._run_one(d) for d in as_dataset_list(dataset)])
        if isinstance(dataset, SpectrumDataset):
            return self._run_spectrum(dataset, observation)
        warn_if_wobble_stack(dataset, "CNNBackgroundMaker.run")
        return self._run_one(dataset)

    def _run_spectrum(self, dataset, observation):
        geom = dataset.counts.geom
        region = geom.region
        if observation is None:
            raise ValueError(
                f"SpectrumDataset {dataset.name!r}: its CNN background is estimated on the run's "
                "whole field of view, from the events: call run(dataset, observation)"
            )
        pointing = observation.get_pointing_icrs(observation.tmid)
        fov = counts_dataset(observation, counts_geom(pointing, energy_axis=geom.axes["energy"]),
                             name=f"{dataset.name}-fov")
        fov = self._run_one(fov)
        image = fov.counts.geom.to_image()
        inside = image.region_mask([region]).data
        where = f"ON region {region.center.to_string('decimal')} (r = {region.radius})" \
            if hasattr(region, "radius") else f"ON region {region!r}"
        if not inside.any():
            raise ValueError(f"{where} of dataset {dataset.name!r} lies outside the 5 x 5 deg map "
                             f"around the pointing of observation {observation.obs_id}")
        safe = fov.mask_safe.data.any(axis=0) if fov.mask_safe is not None else np.ones(inside.shape, bool)
        if not safe[inside].all():
            raise ValueError(f"{where} of dataset {dataset.name!r} reaches beyond the safe field of view "
                             f"(2.5 deg from the pointing) of observation {observation.obs_id}")
        scale = float(geom.solid_angle().ravel()[0] / image.solid_angle()[inside].sum())
        background = fov.background.data[:, inside].sum(axis=1) * scale
        out = dataset.copy(name=dataset.name)
        out.background = RegionNDMap.from_geom(geom, data=background.reshape(geom.data_shape), unit="")
        return out

    def _run_one(self, dataset):
        counts, mask, background = self._background_image(dataset)
        geom = dataset.counts.geom
        data = np.asarray(dataset.counts.data, dtype=float).reshape((-1,) + counts.shape)
        if dataset.mask_safe is not None:
            safe = np.asarray(dataset.mask_safe.data, bool).reshape(data.shape) & mask[None]
        else:
            safe = np.repeat(mask[None], len(data), axis=0)
        centre = _pointing_pixel(dataset)
        if safe.all():  # no pixel to leave out (most counts-only maps): skip the masking
            cube = split_in_energy(background, data, counts, mask, centre=centre)
        else:
            cube = split_in_energy(background, data * safe, counts, mask, centre=centre, safe=safe) * safe
        out = dataset.copy(name=dataset.name)
        out.background = Map.from_geom(geom, data=cube.reshape(geom.data_shape), unit="")
        if dataset.mask_safe is not None or not mask.all():
            out.mask_safe = Map.from_geom(geom, data=safe.reshape(geom.data_shape), dtype=bool)
        if out.models is not None:
            kept = [m for m in out.models if not isinstance(m, FoVBackgroundModel)]
            out.models = Models(kept) if kept else None
        return out


def _pointing_pixel(dataset):
    """The (x, y) pixel of the dataset's pointing (a stack's mean one), or None when unrecorded."""
    pointings = meta_pointings(dataset)
    if pointings is None:
        return None
    x, y = dataset.counts.geom.to_image().coord_to_pix(mean_direction(pointings))
    return float(np.squeeze(x)), float(np.squeeze(y))


def _run_frame(dataset):
    """The 5 x 5 deg frame a dataset's background is estimated in, or None for its own map.

    A one-run map off its pointing: the frame centred on the pointing. A map
    narrower than the frame: the frame centred on the map, the rest masked
    (fed as it is, the network takes the map's edges for the acceptance's fall:
    a 4 x 4 deg map lost 8% of its background).
    """
    geom = dataset.counts.geom
    image = geom.to_image()
    pointings = meta_pointings(dataset)
    if pointings is not None and len(pointings) == 1 \
            and pointings[0].separation(geom.center_skydir.icrs) >= RUN_FRAME_TOLERANCE:
        return run_geom(pointings[0], image)
    if np.min(NativeGrid(geom).native_shape) < NATIVE_NPIX:
        return run_geom(geom.center_skydir, image)
    return None


def warn_if_wobble_stack(dataset, method):
    """Warn when a single dataset is clearly a stack of wobbled runs."""
    spread = wobble_spread(dataset)
    if spread > WOBBLE_WARNING_SPREAD:
        warnings.warn(
            f"dataset {dataset.name!r} stacks runs whose pointings lie up to {spread.to_value('deg'):.2f} "
            f"deg apart: {method} estimates it as one map, centred between them, where an extended "
            "source at the centre looks like acceptance. Estimate it run by run: pass a gammapy "
            "Datasets with one MapDataset per run (e.g. gammapy_cnn.data.counts_dataset of each "
            "observation, or gammapy's MapDatasetMaker without stacking).",
            WobbleStackWarning, stacklevel=3,
        )


class WobbleStackWarning(UserWarning):
    """A single dataset stacks wobbled runs; the per-run path would estimate it better."""


class PartialFieldWarning(UserWarning):
    """A run's map holds too little of its field for the CNN background to be trusted."""


def _checked_images(counts, mask):
    """``counts`` and ``mask`` as (n, ny, nx) float and bool arrays, or ValueError."""
    counts = np.asarray(counts, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if counts.ndim != 3 or counts.shape != mask.shape:
        raise ValueError(f"counts and mask must both be (n, ny, nx) arrays, got shapes "
                         f"{counts.shape} and {mask.shape}")
    if min(counts.shape[1:]) < MIN_NATIVE_PIXELS:
        raise ValueError(f"images of {counts.shape[1:]} pixels are too small: at least "
                         f"{MIN_NATIVE_PIXELS} native pixels on each side")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("counts must be finite and non-negative")
    return counts, mask


def _smoothed_excess(counts, background, mask):
    """Counts minus background, smoothed by `CLEAN_SMOOTHING_PIXELS` (normalised kernel)."""
    sigma = (0, CLEAN_SMOOTHING_PIXELS, CLEAN_SMOOTHING_PIXELS)
    return gaussian_filter((counts - background) * mask, sigma=sigma, mode="constant")


MAKER_REGISTRY.append(CNNBackgroundMaker)
