"""`CNNSourceFinder`: every source candidate of a counts map, localised and scored."""

import copy
import sys
import threading
import warnings

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle
from astropy.utils import lazyproperty
from gammapy.datasets import Datasets
from gammapy.estimators import ESTIMATOR_REGISTRY
from gammapy.estimators.core import Estimator
from scipy.stats import norm

from .background import away_from_excesses, split_in_energy, systematic_fraction
from .candidates import (  # noqa: F401  (their home is gammapy_cnn.candidates)
    _R68_FACTOR,
    COLUMNS,
    EXTENDED_TS,
    CandidateCatalog,
    _icrs_and_galactic,
    _make_table,
    _source_name,
    candidates_to_regions,
    empty_candidates_table,
    write_ds9,
)
from .makers import CNNBackgroundMaker, warn_if_wobble_stack
from .networks import ORIGINAL, load_network
from .peaks import candidate_discs, heatmap_peaks, on_valid_pixel, same_source, with_significance_peaks
from .preprocessing import (
    NativeGrid,
    counts_image,
    native_images,
    normalise,
    original_stretch,
    pad,
)
from .profiles import (  # noqa: F401  (KING_GAMMA: the cross-checks import it from here with fit_source)
    KING_GAMMA,
    SHELL_TS,
    fit_shell,
    fit_size,
    fit_source,
    king_sigma_from_r68,
)
from .runs import as_dataset_list, common_geom, dataset_pointing, reproject_counts, reproject_mask, run_geom
from .utils import NATIVE_BINSZ, NATIVE_NPIX, to_quantity

__all__ = ["CNNSourceFinder", "CandidateCatalog", "candidates_to_regions", "empty_candidates_table", "write_ds9"]

#: Radius of the local fit and of the aperture of the ``excess`` column.
FIT_RADIUS = 0.2 * u.deg
#: Candidates closer than this after refinement are merged (the best one is kept).
MERGE_RADIUS = 0.1 * u.deg
#: Extended candidates at least this large are fitted as a shell too (`~gammapy_cnn.profiles.fit_shell`):
#: below it a shell's limb is not resolved from its centre by the PSF and the centroid is as good.
SHELL_MIN_EXTENSION = 0.2 * u.deg
DEFAULT_THRESHOLD = 0.5  # used only by networks without a calibration in their card
#: King width of a point source in energy-integrated counts of the training IRFs
#: (CTAO-North-like, index 2-3), for networks whose card does not measure it.
DEFAULT_PSF_SIGMA = 0.06 * u.deg
#: The third detection rule, for joint runs over several datasets
#: (`CNNSourceFinder.significance_rule`): a peak of the stacked significance of the
#: counts over the CNN background whose local fit reaches this sqrt(TS) is kept
#: whatever its score. Chosen above the rescue rule's 5 for a 5 x 5 deg map searched
#: at two scales; not calibrated like the threshold and the rescue rule (no
#: held-out stacks yet). Single maps do without it: there it added 0.10 false
#: candidates per field on the calibration set (peaks in the PSF halo of bright
#: sources) for 9 true ones in 600 fields, which the heatmap mostly finds anyway.
SIGNIFICANCE_RULE = 6.0

#: Independent positions of a blind search in a 5 x 5 deg field: (5 deg / 0.1 deg)^2
#: resolution elements of the PSF's size. The trials of `CNNSourceFinder.min_significance`
#: and of the real-time monitor's false-alarm rate.
POSITIONS_PER_FIELD = 2500

_UNSET = object()  # default of a deprecated parameter: tells "not given" from None


def _stacklevel_outside_package():
    """``stacklevel`` of the first caller outside gammapy_cnn, for a warning raised from here.

    A deprecation is the user's to fix: the warning points at their line, also
    when it passes through the package's own modules.
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("gammapy_cnn"):
        frame, level = frame.f_back, level + 1
    return level


def _per_energy(data, dataset, grid):
    """(n_energy, ny, nx) images inside the safe mask, on the native grid."""
    data = np.asarray(data, dtype=float)
    data = data.reshape((-1,) + data.shape[-2:])
    if dataset.mask_safe is not None:
        data = data * np.asarray(dataset.mask_safe.data, bool).reshape(data.shape)
    return np.array([grid.to_native(image) for image in data], dtype=np.float32)


class CNNSourceFinder(Estimator):
    """Find and localise every source candidate in a map dataset, with a CNN.

    Needs only counts: no background template, no IRFs, no target. The
    default network predicts a heatmap of source probability on 0.1 deg
    cells with a sub-cell offset (CenterNet style), so it returns any number
    of candidates; each is then refined by a Poisson likelihood fit of a
    King profile over the CNN background (`CNNBackgroundMaker`), which gives the
    sub-pixel position, its error, the excess counts and a TS.

    ``score`` is the heatmap peak. Its calibration, stored in the network's
    model card, turns it into ``false_alarm_rate``: the expected number of
    false candidates per 5 x 5 deg field (100 s to 30 min) with that score or
    more, measured on simulations held out from training. The default
    threshold is the one the card recommends.

    The ``original`` network is the original CNN-Regressor: one candidate per
    map, no score calibration, no refinement (``"seed"`` is an alias of it).

    Parameters
    ----------
    network : str or `~pathlib.Path`
        Shipped finder network (``"default"``, ``"original"``) or ``.keras`` file.
    threshold : float, optional
        Minimum score of a candidate. Default: the network's calibrated default.
    background_network : str, `~pathlib.Path` or None
        Background network for the refinement (see `CNNBackgroundMaker`), or
        None to use the dataset's own ``npred_background()``. The same name as
        ``cnn.background_network`` in the analysis config and
        ``--background-network`` on the command line.
    refine : bool
        Refine positions with the local fit. Default True.
    max_candidates : int
        At most this many candidates, best first.
    pos_err_scale : float, optional
        Factor applied to the fit's Fisher position error. Default: the one
        calibrated on held-out simulations in the network's card (1 if none),
        so that ``pos_err_68`` contains the true position 68% of the time.
    rescue : bool
        Also keep peaks below the threshold whose local fit is significant
        (`rescue_rule`, from the card; networks without it have none). Default True.
    systematics : bool
        Include the background's systematic error, measured in the map's
        source-free part (`~gammapy_cnn.background.systematic_fraction`), in
        ``significance`` and so in the detection rules that use it. Default True.
    significance_search : bool
        In joint runs over several datasets, also keep peaks of the stacked
        significance over the CNN background whose local fit reaches
        `SIGNIFICANCE_RULE` (`significance_rule`). Default True.
    min_significance : float, optional
        sqrt(TS) that a candidate kept by its score must reach as well. Default:
        the trials-corrected one (`min_significance`): Poisson noise alone
        gives the card's target false rate per field at it (4.3 for 0.02).
        0 turns the floor off.
    psf_sigma : `~astropy.coordinates.Angle`, optional
        Width of the King profile (gamma 3; 68% radius = 2.15 sigma) of a point
        source in the energy-integrated counts: the reference of ``extension``
        and ``ts_ext``. Default: from the dataset's PSF when it has one, else
        the one measured on simulated point sources of the training
        responses (the network's card). Give it for another instrument's
        counts-only data, or sizes and ``ts_ext`` of small sources are biased.
    background : str, `~pathlib.Path` or None
        Deprecated name of ``background_network`` (a FutureWarning); it goes
        in the next release.

    Examples
    --------
    >>> from gammapy_cnn import CNNSourceFinder
    >>> table = CNNSourceFinder()(dataset)  # doctest: +SKIP
    >>> table["Source_Name", "RA", "DEC", "score", "pos_err_68"]  # doctest: +SKIP
    """

    tag = "CNNSourceFinder"

    def __init__(self, network="default", threshold=None, background_network="default", refine=True,
                 max_candidates=50, pos_err_scale=None, rescue=True, systematics=True, significance_search=True,
                 min_significance=None, psf_sigma=None,
                 background=_UNSET):
        if background is not _UNSET:
            if background_network != "default":
                raise TypeError("give background_network only (background is its deprecated name)")
            warnings.warn("CNNSourceFinder(background=...) is deprecated: use background_network=...",
                          FutureWarning, stacklevel=_stacklevel_outside_package())
            background_network = background
        self.network = network
        if threshold is not None and not 0 <= float(threshold) <= 1:
            raise ValueError(f"threshold is a score between 0 and 1, got {threshold}")
        self._threshold = threshold
        self.background_network = background_network
        self.refine = bool(refine)
        if int(max_candidates) < 1:
            raise ValueError(f"max_candidates must be >= 1, got {max_candidates}")
        self.max_candidates = int(max_candidates)
        if pos_err_scale is not None and not float(pos_err_scale) > 0:
            raise ValueError(f"pos_err_scale must be positive, got {pos_err_scale}")
        self._pos_err_scale = pos_err_scale
        self.rescue = bool(rescue)
        self.systematics = bool(systematics)
        self.significance_search = bool(significance_search)
        if min_significance is not None and not float(min_significance) >= 0:
            raise ValueError(f"min_significance is a sqrt(TS) >= 0, got {min_significance}")
        self._min_significance = min_significance
        self.psf_sigma = None if psf_sigma is None else Angle(to_quantity(psf_sigma, "deg", "psf_sigma",
                                                                          positive=True))
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        """A copy (`copy`) with its own lock; a loaded network (learned, read-only state) is shared."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key == "_lock":
                value = threading.Lock()
            elif key != "network_":
                value = copy.deepcopy(value, memo)
            new.__dict__[key] = value
        return new

    @lazyproperty
    def network_(self):
        """The loaded finder `~gammapy_cnn.networks.Network` (learned state; ``network`` is its name or file)."""
        return load_network("finder", self.network)

    @lazyproperty
    def background_maker(self):
        if self.background_network is None:
            return None
        if self.network_.architecture == ORIGINAL:  # the original regressor reads the original cleaner
            return CNNBackgroundMaker(ORIGINAL)
        return CNNBackgroundMaker(self.background_network)

    @property
    def calibration(self):
        return self.network_.card.get("calibration")

    @property
    def threshold(self):
        if self._threshold is not None:
            return float(self._threshold)
        return float((self.calibration or {}).get("default_threshold", DEFAULT_THRESHOLD))

    @property
    def rescue_rule(self):
        """The second detection rule, or None: ``dict(score=..., significance=...)``.

        A peak whose score is below the threshold but at least ``score`` is kept
        when its local fit gives at least ``significance`` (sqrt(TS)): the
        network is unsure, the counts are not. Its false rate is calibrated in
        the card (`~gammapy_cnn.training.calibrate_finder`); it needs the refinement.
        """
        cal = self.calibration or {}
        if not (self.rescue and self.refine and "rescue_score" in cal):
            return None
        return dict(score=float(cal["rescue_score"]), significance=float(cal["rescue_significance"]))

    @property
    def significance_rule(self):
        """The joint runs' third detection rule: its sqrt(TS) (`SIGNIFICANCE_RULE`), or None when off.

        Peaks of the stacked significance of the counts over the CNN
        background, at 0.1 and 0.3 deg, are refined like heatmap peaks and
        kept when their local fit reaches it, whatever their score (0 when no
        run's heatmap peak is near): sources only the stack shows, and large
        ones the heatmap sees weakly. Needs the refinement.
        """
        return SIGNIFICANCE_RULE if (self.significance_search and self.refine) else None

    @property
    def min_significance(self):
        """The sqrt(TS) a candidate kept by its score must reach as well (0: no floor).

        The score is calibrated on simulations; on data unlike them (another
        instrument, the real sky) a network can score noise peaks highly. So
        a candidate must also be significant for a blind search: the one-sided
        Gaussian tail at this significance, times `POSITIONS_PER_FIELD` trials,
        is the card's target false rate per field (``target_false_per_field``):
        4.3 for 0.02. On the calibration scenario it costs about 1% of the
        true candidates above the threshold, all near it. Needs the refinement
        (no significance without it, no floor).
        """
        if self._min_significance is not None:
            return float(self._min_significance)
        rate = (self.calibration or {}).get("target_false_per_field")
        if rate is None or not self.refine:
            return 0.0
        return float(norm.isf(rate / POSITIONS_PER_FIELD))

    @property
    def pos_err_scale(self):
        """Factor from the fit's Fisher error to the reported ``pos_err`` (calibrated in the card)."""
        if self._pos_err_scale is not None:
            return float(self._pos_err_scale)
        return float((self.calibration or {}).get("pos_err_scale", 1.0))

    def false_alarm_rate(self, score):
        """Expected false candidates per field at or above ``score`` (NaN if uncalibrated)."""
        cal = self.calibration
        if not cal:
            return np.full(np.shape(score), np.nan)
        return np.interp(score, cal["score"], cal["false_per_field"])

    def __call__(self, dataset):
        return self.run(dataset)

    def run(self, dataset):
        """Candidates of a dataset, or jointly of one dataset per run, best first.

        Given `~gammapy.datasets.Datasets` (one dataset per run, e.g. the runs
        of a wobble campaign), the finder runs jointly, as gammapy's
        `~gammapy.analysis.Analysis` stacks per-run reductions: each run's
        background is estimated on a map centred on its own pointing
        (`CNNBackgroundMaker`), where the networks tell a source from the
        acceptance, and each run's heatmap is computed there too. The counts
        and backgrounds are stacked on one map (`~gammapy_cnn.runs.common_geom`:
        the runs' own geometry when they share one with 0.025 deg pixels),
        and every candidate is refined on the stack. Candidates are the
        heatmap peaks of the runs, and the peaks of the stacked significance
        (0.1 and 0.3 deg smoothing): a source too faint for any single run's
        network can still be found in the stack, by the third rule below.

        Rules that keep a candidate: score >= ``threshold`` with a
        significance of at least `min_significance` (trials-corrected); the rescue rule
        (`rescue_rule`); and, in joint runs only, the significance rule
        (`significance_rule`): a peak of the stacked significance whose local
        fit reaches sqrt(TS) >= `SIGNIFICANCE_RULE` (score 0 when no run's
        heatmap peak is near, and then a NaN ``false_alarm_rate``).

        Parameters
        ----------
        dataset : `~gammapy.datasets.MapDataset` or `~gammapy.datasets.Datasets`
            Counts-only or full, 2D or 3D, any WCS geometry. For the joint
            path each dataset records its run's pointing (``meta_table`` with
            ``RA_PNT``/``DEC_PNT``, as `gammapy_cnn.data.counts_dataset` and
            gammapy's `~gammapy.makers.MapDatasetMaker` write it).

        Returns
        -------
        table : `~astropy.table.Table`
            One row per candidate; see ``COLUMNS`` for the columns and units.
            An empty table (same columns) when nothing passes the threshold.
            For a joint run, ``x``/``y`` are pixels of the joint map, whose
            geometry is in ``table.meta["joint_geom"]`` (WCS header) when it is
            not the runs' own.
        """
        network, maker = self._loaded()
        if isinstance(dataset, (Datasets, list, tuple)):
            return self._run_joint(as_dataset_list(dataset), network, maker)
        return self._run_each([dataset], network, maker)[0]

    def run_many(self, datasets):
        """Candidates of several independent datasets, the networks called once for all of them.

        What `run` gives for each dataset on its own (no joint search), but
        the heatmaps of the maps that share a shape come from one batched
        network call, and so do their backgrounds: the real-time monitor's
        windows that fall due together (10 s to cumulative) go through in one
        step.

        Parameters
        ----------
        datasets : sequence of `~gammapy.datasets.MapDataset`

        Returns
        -------
        tables : list of `~astropy.table.Table`
            One per dataset, in order; see `run`.
        """
        network, maker = self._loaded()
        return self._run_each(list(datasets), network, maker)

    def _loaded(self):
        """The finder network and the background maker, loaded (once, under the lock)."""
        with self._lock:  # lazy loading is not thread-safe; inference is (tested with 4 threads)
            network = self.network_
            maker = self.background_maker
            if maker is not None:
                maker.network_  # noqa: B018  (load it here, not in two threads at once)
        return network, maker

    def _run_each(self, datasets, network, maker):
        """One table per dataset; maps of the same native shape share the network calls."""
        images = []
        for dataset in datasets:
            warn_if_wobble_stack(dataset, "CNNSourceFinder.run")
            images.append(native_images(dataset))
        tables = [None] * len(datasets)
        groups = {}
        for i, (grid, counts, _, native_counts, _) in enumerate(images):
            if not counts.any():  # no event, no candidate (an empty time window is valid input)
                tables[i] = self._table([], datasets[i].counts.geom, grid)
            elif network.architecture == ORIGINAL:
                rows = self._original_candidates(network, native_counts)
                tables[i] = self._table(rows, datasets[i].counts.geom, grid)
            else:
                groups.setdefault(native_counts.shape, []).append(i)
        for members in groups.values():
            counts = np.array([images[i][3] for i in members])
            mask = np.array([images[i][4] for i in members])
            refine = self.refine and maker is not None
            # one map: the cleaner's first look comes in the same `predict` as the heatmap (one
            # graph call through TensorFlow); in a batch only the maps with peaks need it
            alone = refine and len(members) == 1 and maker.network_.architecture != ORIGINAL
            cleaner = maker.network_ if alone else None
            peaks, cleaner_output = self._heatmap_peaks(network, counts, mask, cleaner)
            with_peaks = [k for k, (xs, _, _) in enumerate(peaks) if len(xs)]
            backgrounds = {}
            if refine and with_peaks:
                estimated = maker.estimate_background(
                    counts[with_peaks], mask[with_peaks],
                    None if cleaner_output is None else cleaner_output[with_peaks])
                backgrounds = dict(zip(with_peaks, estimated))
            for k, i in enumerate(members):
                grid = images[i][0]
                rows = self._candidates(peaks[k], counts[k], mask[k], backgrounds.get(k), datasets[i], grid)
                tables[i] = self._table(rows, datasets[i].counts.geom, grid)
        return tables

    def _run_joint(self, datasets, network, maker):
        if network.architecture == ORIGINAL:
            raise ValueError("the original regressor finds one candidate in one map; a joint run over "
                             "several datasets needs the default finder network")
        geom = common_geom(datasets, NATIVE_BINSZ)
        image = geom.to_image()
        axes = [d.counts.geom.axes for d in datasets]
        energy_planes = len(axes[0]["energy"].center) if all(a == axes[0] for a in axes) and axes[0] else 1
        cube = np.zeros((energy_planes,) + image.data_shape)
        background_cube = np.zeros_like(cube)
        mask = np.zeros(image.data_shape, bool)
        peaks = []
        for dataset in datasets:
            estimated = maker.run(dataset) if maker is not None else dataset
            shape = (-1,) + dataset.counts.geom.data_shape[-2:]
            safe = (np.ones(dataset.counts.data.shape, bool) if estimated.mask_safe is None
                    else np.asarray(estimated.mask_safe.data, bool)).reshape(shape)
            counts = np.asarray(dataset.counts.data, float).reshape(shape) * safe
            background = np.asarray(estimated.npred_background().data, float).reshape(shape) * safe
            if energy_planes == 1:
                counts, background = counts.sum(axis=0, keepdims=True), background.sum(axis=0, keepdims=True)
            source = dataset.counts.geom.to_image()
            stacked, _ = reproject_counts(counts, source, image)
            cube += stacked
            background_cube += reproject_counts(background, source, image)[0]
            mask |= reproject_mask(safe.any(axis=0), source, image)
            peaks += self._run_peaks(network, dataset, image)
        if not cube.any():
            return self._table([], geom, NativeGrid(geom))
        binsz = NATIVE_BINSZ.to_value("deg")
        xs, ys, scores = with_significance_peaks(peaks, cube.sum(axis=0), background_cube.sum(axis=0), mask,
                                                 self.significance_rule, MERGE_RADIUS.to_value("deg") / binsz,
                                                 FIT_RADIUS.to_value("deg") / binsz)
        rows = self._refined(xs, ys, scores, cube, background_cube, mask,
                             self._psf_sigma_pixels(datasets[0], cube), self.rescue_rule,
                             min_significance=self.significance_rule) if self.refine else []
        table = self._table(rows, geom, NativeGrid(geom))
        table.meta["n_runs"] = len(datasets)
        if geom.to_image() != datasets[0].counts.geom.to_image():
            table.meta["joint_geom"] = geom.to_image().wcs.to_header_string()
        return table

    def _run_peaks(self, network, dataset, image):
        """Heatmap peaks of one run, in its run frame, as (x, y, score) pixels of ``image``."""
        counts, mask = counts_image(dataset)
        source = dataset.counts.geom.to_image()
        frame = run_geom(dataset_pointing(dataset), source)
        run_counts, _ = reproject_counts(counts * mask, source, frame)
        run_mask = reproject_mask(mask, source, frame)
        if not run_counts.any():
            return []
        xs, ys, scores = self._heatmap_peaks(network, run_counts[None], run_mask[None])[0][0]
        if not len(xs):
            return []
        lon, lat = frame.pix_to_coord((xs, ys))
        px, py = image.coord_to_pix((lon, lat))
        return [(x, y, score) for x, y, score in zip(px, py, scores) if np.isfinite(x) and np.isfinite(y)]

    def _original_candidates(self, network, counts):
        if counts.shape != (NATIVE_NPIX, NATIVE_NPIX):
            raise ValueError(f"the original regressor only takes {NATIVE_NPIX} x {NATIVE_NPIX} maps "
                             f"of {NATIVE_BINSZ} pixels")
        x, _, _ = original_stretch(counts[None])
        cleaner = self.background_maker.network_ if self.background_maker else load_network("cleaner", ORIGINAL)
        cleaned = cleaner.predict(x[..., None])
        xy = network.predict(cleaned)[0] * NATIVE_NPIX
        return [dict(x=xy[0], y=xy[1], score=float(cleaned[0].max()), significance=np.nan,
                     excess=np.nan, pos_err=np.nan)]

    def _candidates(self, peaks, counts, mask, background, dataset, grid):
        """Refined candidates of one map from its heatmap peaks and its CNN ``background`` (None:
        the dataset's own)."""
        xs, ys, scores = peaks
        if not (self.refine and len(xs)):
            rows = [dict(x=x, y=y, score=score) for x, y, score in zip(xs, ys, scores)]
            return self._accepted(rows, counts.shape, self.rescue_rule)
        # per-energy cubes only now: most real-time fields have no candidate,
        # and a large map's cube costs memory
        cube = _per_energy(dataset.counts.data, dataset, grid)
        source_free = None
        if background is not None:
            radius = FIT_RADIUS.to_value("deg") / NATIVE_BINSZ.to_value("deg")
            source_free = away_from_excesses(counts, background, mask)  # the split's and the systematics'
            # the spectrum as CNNBackgroundMaker.run makes it, the candidates' discs left out too
            background_cube = split_in_energy(background, cube, counts, mask, source_free=source_free,
                                              exclude=candidate_discs(mask.shape, xs, ys, 1.5 * radius))
        else:
            background_cube = _per_energy(dataset.npred_background().data, dataset, grid)
        return self._refined(xs, ys, scores, cube, background_cube, mask,
                             self._psf_sigma_pixels(dataset, cube), self.rescue_rule, source_free=source_free)

    def _heatmap_peaks(self, network, counts, mask, cleaner=None):
        """Heatmap peaks above the lowest score that can be kept, per (n, ny, nx) map: x, y
        (native pixels), score; and the output of the ``cleaner`` network run in the same call
        (None without one)."""
        x, _ = normalise(counts, mask)
        x, window = pad(x)
        out, cleaner_output = network.predict(x, together_with=[cleaner]) if cleaner else (network.predict(x), None)
        return [self._peaks(out["heatmap"][i, ..., 0], out["offset"][i], window, mask[i])
                for i in range(len(counts))], cleaner_output

    def _peaks(self, heat, offset, window, mask):
        """The peaks of one map's heatmap at the lowest score that can be kept."""
        rescue = self.rescue_rule
        floor = min(self.threshold, rescue["score"]) if rescue else self.threshold
        return heatmap_peaks(heat, offset, window, mask, floor, 2 * self.max_candidates)

    def _psf_sigma_pixels(self, dataset, cube):
        """King width (native pixels) of a point source in the energy-integrated counts.

        The ``psf_sigma`` given to the finder; else the dataset's PSF, its 68%
        radius weighted by the counts per energy bin; else the one measured on
        simulated point sources in the network's card; else `DEFAULT_PSF_SIGMA`.
        """
        binsz = NATIVE_BINSZ.to_value("deg")
        if self.psf_sigma is not None:
            return self.psf_sigma.to_value("deg") / binsz
        psf = getattr(dataset, "psf", None)
        if psf is not None and dataset.counts.geom.axes:
            energy = dataset.counts.geom.axes["energy"].center
            try:
                r68 = psf.containment_radius(0.68, energy_true=energy,
                                             position=dataset.counts.geom.center_skydir)
                weights = np.asarray(cube, float).sum(axis=(1, 2))
                if np.all(np.isfinite(r68)) and weights.sum() > 0:
                    r68 = np.sum(r68.to_value("deg") * weights) / weights.sum()
                    return king_sigma_from_r68(r68) / binsz
            except (ValueError, KeyError, IndexError):
                pass  # a PSF that cannot be evaluated here: fall back on the card's
        sigma = (self.calibration or {}).get("psf_sigma_deg", DEFAULT_PSF_SIGMA.to_value("deg"))
        return float(sigma) / binsz

    def _refined(self, xs, ys, scores, cube, background_cube, mask, psf_sigma, rescue, min_significance=None,
                 source_free=None):
        """Candidates refined by the local fits, kept by the detection rules, merged, best first.

        Each peak gets the point-source fit (position, counts, TS), then the
        extension fit (`~gammapy_cnn.profiles.fit_extension`); a size found
        there is fitted again with the other peaks in its cutout as point
        sources in the background (`~gammapy_cnn.profiles.fit_size`), and kept only when
        it stays significant: two bright sources 0.5 deg apart stay two, not
        one wide source between them, while the peaks along a shell, which
        do not explain it, leave its size as it was (and a peak of the shell
        whose size they explain is still merged into it:
        `~gammapy_cnn.peaks.same_source`). An extended one
        (``ts_ext >= EXTENDED_TS``) takes the extension fit's centroid, counts
        and TS. ``min_significance``: the significance rule's sqrt(TS) (joint runs), or None;
        ``source_free``: `~gammapy_cnn.background.away_from_excesses` of the images, when known.
        """
        binsz = NATIVE_BINSZ.to_value("deg")
        radius = FIT_RADIUS.to_value("deg") / binsz
        counts_image, background_image = cube.sum(axis=0), background_cube.sum(axis=0)
        systematic = 0.0
        if self.systematics:
            if source_free is None:
                source_free = away_from_excesses(counts_image, background_image, mask)
            source_free = source_free & ~candidate_discs(mask.shape, xs, ys, radius)
            systematic = systematic_fraction(counts_image, background_image, source_free)
        rows = []
        for px, py, score in zip(xs, ys, scores):
            row = dict(x=px, y=py, score=float(score))
            below = row["score"] < self.threshold  # only a rescue can keep it
            min_ts = rescue["significance"] ** 2 if below and rescue else 0.0
            if below and min_significance is not None:
                min_ts = min(min_ts or np.inf, min_significance**2)
            fit = fit_source(cube, background_cube, px, py, radius, min_ts=min_ts)
            reach = radius / 2 - 0.5
            if on_valid_pixel(mask, fit["x"], fit["y"]) and np.hypot(fit["x"] - px, fit["y"] - py) >= reach:
                # the fit walked out of its cutout's core (a heatmap peak off a source far brighter
                # than any in training: a GRB's first seconds); fit again around where it went, and
                # keep that when it stays there
                again = fit_source(cube, background_cube, fit["x"], fit["y"], radius, min_ts=min_ts)
                if np.hypot(again["x"] - fit["x"], again["y"] - fit["y"]) < reach and again["ts"] > fit["ts"]:
                    fit, px, py = again, fit["x"], fit["y"]
            row.update(significance=np.sqrt(fit["ts"]), excess=fit["amplitude"],
                       pos_err=fit["pos_err"] * binsz * self.pos_err_scale)
            if on_valid_pixel(mask, fit["x"], fit["y"]) and np.hypot(fit["x"] - px, fit["y"] - py) < reach:
                row.update(x=fit["x"], y=fit["y"])
            rows.append(row)
        points = [(row["x"], row["y"]) for row in rows]
        merge = MERGE_RADIUS.to_value("deg") / binsz
        for i, row in enumerate(rows):
            ext, wide_centroid = fit_size(counts_image, background_image, points, i, psf_sigma, radius, binsz, merge)
            if wide_centroid is not None:
                row["wide_centroid"] = wide_centroid
            row.update(extension=ext["extension"], extension_err=ext["extension_err"], ts_ext=ext["ts_ext"])
            # the centroid of a large source may fall where the map is masked: then the peak stays
            if row["ts_ext"] >= EXTENDED_TS and on_valid_pixel(mask, ext["x"], ext["y"]):
                row.update(x=ext["x"], y=ext["y"], significance=np.sqrt(ext["ts"]), excess=ext["amplitude"],
                           pos_err=ext["pos_err"] * binsz * self.pos_err_scale)
                if row["extension"] >= SHELL_MIN_EXTENSION.to_value("deg"):
                    self._shell(row, ext, counts_image, background_image, mask, psf_sigma)
            if systematic > 0:
                # B (1 +- eps) under the source: Poisson variance B plus (eps B)^2
                size = 2 * max(psf_sigma, row["extension"] / binsz if row["ts_ext"] >= EXTENDED_TS else 0)
                under = background_image[candidate_discs(mask.shape, [row["x"]], [row["y"]], size)].sum()
                row["significance"] /= np.sqrt(1 + systematic**2 * under)
            row["background_systematic"] = systematic
        return self._accepted(rows, mask.shape, rescue, min_significance)

    def _shell(self, row, ext, counts, background, mask, psf_sigma):
        """Give a large extended candidate a shell's centre, size, counts and TS where a shell
        fits its counts better than the centrally peaked profile (by `SHELL_TS`, same cutout)."""
        binsz = NATIVE_BINSZ.to_value("deg")
        shell = fit_shell(counts, background, row["x"], row["y"], row["extension"] / binsz, psf_sigma,
                          ext["radius"])
        if shell["ts"] - ext["ts"] >= SHELL_TS and on_valid_pixel(mask, shell["x"], shell["y"]):
            row.update(x=shell["x"], y=shell["y"], significance=np.sqrt(shell["ts"]), excess=shell["amplitude"],
                       shell_radius=shell["radius"] * binsz, shell_width=shell["width"] * binsz)
            if shell["pos_err"] < ext["radius"]:  # else a parameter at its bound: the centroid's error stays
                row["pos_err"] = shell["pos_err"] * binsz * self.pos_err_scale

    def _accepted(self, rows, shape, rescue, min_significance=None):
        kept = []
        merge = MERGE_RADIUS.to_value("deg") / NATIVE_BINSZ.to_value("deg")
        for row in sorted(rows, key=lambda r: r["score"], reverse=True):
            significance = row.get("significance", np.nan)
            rescued = rescue is not None and row["score"] >= rescue["score"] and significance >= rescue["significance"]
            significant = min_significance is not None and significance >= min_significance
            scored = row["score"] >= self.threshold and not significance < self.min_significance
            if not (scored or rescued or significant):
                continue
            # At most the centre of a border pixel: the table's positions (x, y and sky
            # coordinates, after resampling) always lie inside the input map.
            row.update(x=float(np.clip(row["x"], 0, shape[1] - 1)), y=float(np.clip(row["y"], 0, shape[0] - 1)))
            # best first: drop candidates that converged onto a better one, or fragments of
            # an extended one
            if not any(same_source(row, k, merge) for k in kept):
                kept.append(row)
        return kept[: self.max_candidates]

    def _table(self, rows, geom, grid):
        meta = dict(network=str(self.network), threshold=self.threshold)
        if not rows:
            return _make_table(meta=meta)
        if "background_systematic" in rows[0]:
            meta["background_systematic"] = rows[0]["background_systematic"]
        image = geom.to_image()
        x_in, y_in = grid.pix_from_native(np.array([r["x"] for r in rows]),
                                          np.array([r["y"] for r in rows]))
        (ra, dec), (glon, glat) = _icrs_and_galactic(image, x_in, y_in)
        scores = np.array([r["score"] for r in rows])
        pos_err = np.array([r.get("pos_err", np.nan) for r in rows])
        values = dict(
            Source_Name=[_source_name(r, d) for r, d in zip(ra, dec)], RA=ra, DEC=dec,
            GLON=glon, GLAT=glat, ra=ra, dec=dec, x=x_in, y=y_in, score=scores,
            false_alarm_rate=np.where(scores > 0, self.false_alarm_rate(scores), np.nan),
            significance=[r.get("significance", np.nan) for r in rows],
            excess=[r.get("excess", np.nan) for r in rows],
            pos_err=pos_err, pos_err_68=pos_err * _R68_FACTOR,
            **{name: [r.get(name, np.nan) for r in rows]
               for name in ("extension", "extension_err", "ts_ext", "shell_radius", "shell_width")},
        )
        return _make_table(values, meta=meta)

    def run_catalog(self, dataset):
        """Candidates as a `CandidateCatalog` (gammapy `SourceCatalog` interface)."""
        return CandidateCatalog(self.run(dataset))


ESTIMATOR_REGISTRY.append(CNNSourceFinder)
