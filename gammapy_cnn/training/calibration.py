"""Calibration of a finder network's scores, position errors and point-source width."""

from pathlib import Path

import astropy.units as u
import numpy as np

from ..simulation.io import SimulationReader
from .core import write_card
from .targets import source_radius

__all__ = ["calibrate_finder", "point_source_width"]


def point_source_width(reader, n, min_counts=300):
    """Median King width (deg) of the bright point sources of a simulation file.

    Each point source with at least ``min_counts`` expected counts, alone
    within 1 deg, is fitted (`~gammapy_cnn.profiles.fit_source`) over the true
    background: the width of a point source in energy-integrated counts of the
    file's responses, the reference of the finder's ``extension``.
    """
    from ..profiles import fit_source

    widths = []
    for i in range(n):
        truth = reader.sources(i)
        if len(truth) == 0:
            continue
        for k, src in enumerate(truth):
            others = np.delete(np.arange(len(truth)), k)
            alone = all(np.hypot(src["x"] - truth["x"][j], src["y"] - truth["y"][j]) * reader.binsz > 1.0
                        for j in others)
            if src["morphology"] == 0 and src["npred"] >= min_counts and alone:
                counts = reader.counts(i).sum(axis=0)
                background = reader.background(i).sum(axis=0)
                fit = fit_source(counts, background, src["x"], src["y"], 0.2 / reader.binsz)
                widths.append(fit["sigma"] * reader.binsz)
    return float(np.median(widths)) if widths else 0.06


def calibrate_finder(network, data, background="default", match_radius=0.15, target_rate=0.02,
                     max_maps=None, progress=True, rescue_score=0.3, rescue_significance=5.0):
    """Measure the false-alarm rate of a finder network's scores and store it in its card.

    Runs `~gammapy_cnn.CNNSourceFinder` at a low threshold on simulated maps
    held out from training; a candidate farther than ``match_radius`` (deg),
    widened in quadrature by the source's size (`source_radius`), from every
    true source is false. The card gets ``calibration``: scores and
    false candidates per field with at least that score, and
    ``default_threshold``, the lowest score at which that rate is at most
    ``target_rate``; and ``pos_err_scale``, the factor that makes the
    position errors of the matched candidates above that threshold cover
    their true errors (68% of them within ``pos_err_68``): the Fisher error
    of the fit is too small (by 30% for the shipped finder), since the
    fitted profile is not the true PSF and the background is estimated;
    and ``psf_sigma_deg``, the width of a point source (`point_source_width`),
    the reference of the finder's ``extension`` and ``ts_ext``.

    The scores are calibrated alone (``min_significance=0``); the card then
    records what the trials floor (`CNNSourceFinder.min_significance`, from
    ``target_rate``) removes above the threshold: ``floor_false_per_field``
    and ``n_true_candidates_below_floor``.

    It also measures the second detection rule (`CNNSourceFinder.rescue_rule`):
    peaks with a score between ``rescue_score`` and the threshold whose local
    fit gives sqrt(TS) >= ``rescue_significance``. The card records the rule
    and its false (``rescue_false_per_field``) and true candidates; pass
    ``rescue_significance=None`` to ship a network without it.

    Returns
    -------
    calibration : dict
    """
    from astropy.coordinates import SkyCoord
    from gammapy.datasets import MapDataset
    from gammapy.maps import Map, MapAxis, WcsGeom
    from scipy.stats import norm
    from tqdm.auto import tqdm

    from ..finders import POSITIONS_PER_FIELD, CNNSourceFinder

    reader = SimulationReader(data)
    n = len(reader) if max_maps is None else min(len(reader), max_maps)
    psf_sigma = point_source_width(reader, n)
    finder = CNNSourceFinder(network=network, background_network=background, threshold=0.05,
                             max_candidates=100, pos_err_scale=1.0, rescue=False, min_significance=0,
                             psf_sigma=psf_sigma * u.deg)
    energy = MapAxis.from_energy_edges(reader.energy_edges, unit="TeV", name="energy")
    npix = reader.counts(0).shape[-1]
    false_scores, true_scores, true_error_ratio = [], [], []
    false_significance, true_significance = [], []
    for i in tqdm(range(n), disable=not progress, desc="calibrate"):
        row = reader.maps[i]
        geom = WcsGeom.create(skydir=(row["pointing_ra"], row["pointing_dec"]), npix=npix,
                              binsz=reader.binsz, frame="icrs", proj="TAN", axes=[energy])
        dataset = MapDataset(counts=Map.from_geom(geom, data=reader.counts(i).astype(float)))
        table = finder.run(dataset)
        truth = reader.sources(i)
        if len(table) == 0:
            continue
        cand = SkyCoord(table["RA"], table["DEC"], unit="deg")
        if len(truth):
            sep = cand[:, None].separation(SkyCoord(truth["ra"], truth["dec"], unit="deg")[None, :])
            # a candidate within an extended source's extent belongs to it
            radius = np.hypot(match_radius, source_radius(truth))
            matched = (sep.deg < radius[None, :]).any(axis=1)
            true_error_ratio.extend(sep.deg.min(axis=1)[matched] / table["pos_err_68"][matched])
        else:
            matched = np.zeros(len(table), bool)
        false_scores.extend(table["score"][~matched])
        true_scores.extend(table["score"][matched])
        false_significance.extend(table["significance"][~matched])
        true_significance.extend(table["significance"][matched])
    reader.close()
    scores = np.linspace(0.05, 1.0, 96)
    false_scores = np.asarray(false_scores)
    rate = np.array([(false_scores >= s).sum() / n for s in scores])
    ok = np.nonzero(rate <= target_rate)[0]
    threshold = float(scores[ok[0]]) if len(ok) else 1.0
    above = np.asarray(true_scores) >= threshold
    ratio = np.asarray(true_error_ratio)[above]
    floor = float(norm.isf(target_rate / POSITIONS_PER_FIELD))
    false_above = false_scores >= threshold
    calibration = dict(
        score=scores.round(4).tolist(), false_per_field=rate.round(5).tolist(),
        default_threshold=threshold, target_false_per_field=target_rate, n_fields=int(n),
        match_radius_deg=match_radius, data=Path(data).name,
        n_true_candidates_above_threshold=int(above.sum()),
        pos_err_scale=float(np.percentile(ratio, 68)) if len(ratio) else 1.0,
        psf_sigma_deg=psf_sigma,
        min_significance=floor,
        floor_false_per_field=float((false_above & (np.asarray(false_significance) < floor)).sum() / n),
        n_true_candidates_below_floor=int((above & (np.asarray(true_significance) < floor)).sum()),
        # significances (and so the rescue rule) include the background's systematic error
        systematics=finder.systematics,
    )
    if rescue_significance is not None:
        def in_rescue_zone(scores, significance):
            scores, significance = np.asarray(scores), np.asarray(significance)
            return ((scores >= rescue_score) & (scores < threshold)
                    & (significance >= rescue_significance))

        calibration.update(
            rescue_score=float(rescue_score), rescue_significance=float(rescue_significance),
            rescue_false_per_field=float(in_rescue_zone(false_scores, false_significance).sum() / n),
            n_true_candidates_rescued=int(in_rescue_zone(true_scores, true_significance).sum()),
        )
    path = finder.network_.path
    card = dict(finder.network_.card, calibration=calibration)
    write_card(path, card)
    return calibration
