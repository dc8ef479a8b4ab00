"""The acceptance wobbled runs share: the background under a source that every run eats a little of.

The camera acceptance is the same function of the position *in the camera*
for every run of a campaign (same instrument, similar conditions), while a
source is fixed *on the sky*, so it sits at a different camera position in
each wobbled run. A faint large source (a 1 deg shell at 0.2 Crab) looks like
acceptance to a network that sees one run: each run's CNN background takes in
part of it, and the run-by-run stack keeps a third of its significance. The
median over the runs of their CNN backgrounds, each in its run frame (centred
on its pointing) and normalised, is the shared acceptance: at a camera
position that only some runs see the source at, the median follows the runs
that do not. Its excesses are then looked for on the sky, in the stack of
all runs, and the median is taken again without them, until they no longer
grow (`shared_acceptance`). Under those excesses, and only there, each run's
background becomes the shared acceptance fitted to that run's counts outside
them; elsewhere it stays the run's own CNN estimate, which follows what is
particular to the run. A campaign with no stacked excess keeps its run-by-run
CNN backgrounds unchanged.

Plain numpy images on run frames and one sky geometry; no network.
"""

import numpy as np

from .background import away_from_excesses
from .runs import reproject_counts, reproject_mask

__all__ = ["MIN_RUNS", "STACK_EXCESS_SCALES", "shared_acceptance"]

#: Fewest runs whose median tells a sky-fixed source from the acceptance (with two, the
#: median is their mean, which keeps half of a source one of them sees).
MIN_RUNS = 3
#: Smoothing widths (pixels of 0.025 deg: 0.1, 0.3 and 0.6 deg) of the stacked excess search:
#: the largest is the scale of the sources the single-run maps leave to the stack.
STACK_EXCESS_SCALES = (4.0, 12.0, 24.0)
#: Most passes of median and excess search (they stop earlier when the excesses stay the same).
MAX_PASSES = 6


def shared_acceptance(counts, backgrounds, masks, frames, sky):
    """Run backgrounds whose sky-fixed excesses are under the runs' shared acceptance.

    Parameters
    ----------
    counts, backgrounds : list of `~numpy.ndarray`
        Per run, (ny, nx) energy-integrated counts and CNN background on the
        run's frame (all frames of one shape, each centred on its pointing).
    masks : list of `~numpy.ndarray`
        Per run, (ny, nx) bool valid pixels of the frame.
    frames : list of `~gammapy.maps.WcsGeom`
        The run frames.
    sky : `~gammapy.maps.WcsGeom`
        A 2D geometry holding every frame: where the runs are stacked.

    Returns
    -------
    backgrounds : list of `~numpy.ndarray`
        Per run, on its frame: the shared acceptance fitted to the run's
        counts under the stacked excesses, its own background elsewhere
        (the input arrays when there is no excess).
    excess : `~numpy.ndarray`
        (ny, nx) bool on ``sky``: the stacked excesses (all False: none).
    """
    if len(counts) < MIN_RUNS:
        return list(backgrounds), np.zeros(sky.data_shape, bool)
    covered = _stack([m.astype(float) for m in masks], frames, sky) > 0.5
    excess = np.zeros(sky.data_shape, bool)
    shared = list(backgrounds)
    for _ in range(MAX_PASSES):
        outside = [m & ~reproject_mask(excess, sky, f) for m, f in zip(masks, frames)]
        acceptance = _median_shape(backgrounds, outside)
        shared = [_fitted(acceptance, n, keep) * m for n, keep, m in zip(counts, outside, masks)]
        found = excess | _stacked_excesses(_stack(counts, frames, sky), _stack(shared, frames, sky), covered)
        found &= covered
        if np.array_equal(found, excess):
            break
        excess = found
    if not excess.any():
        return list(backgrounds), excess
    under = [reproject_mask(excess, sky, f) for f in frames]
    return [np.where(u, s, b) for u, s, b in zip(under, shared, backgrounds)], excess


def _stacked_excesses(counts, background, covered):
    """Significant excesses of the stack (`away_from_excesses` at `STACK_EXCESS_SCALES`).

    Beyond the runs' frames the map holds the mean background as counts and as
    background: no excess, and no edge where a smoothed fluctuation would meet
    an expectation of zero.
    """
    level = background[covered].mean()
    counts, background = np.where(covered, counts, level), np.where(covered, background, level)
    return ~away_from_excesses(counts, background, np.ones_like(covered), scales=STACK_EXCESS_SCALES)


def _stack(images, frames, sky):
    return sum(reproject_counts(image, frame, sky)[0] for image, frame in zip(images, frames))


def _median_shape(backgrounds, outside):
    """Median over runs of their backgrounds, each normalised on the camera region free in all of them.

    A run votes only where it is outside the excesses; where no run is, all of them do.
    """
    common = np.logical_and.reduce(outside)
    if common.sum() < 0.1 * common.size:  # excesses everywhere in some run: normalise on the whole frame
        common = np.ones_like(common)
    scaled = np.array([b / max(b[common].sum(), 1e-12) for b in backgrounds])
    acceptance = np.median(scaled, axis=0)
    free = np.array(outside)
    partly = free.any(axis=0) & ~free.all(axis=0)
    if partly.any():
        votes = np.where(free[:, partly], scaled[:, partly], np.nan)
        acceptance[partly] = np.nanmedian(votes, axis=0)
    return acceptance


def _fitted(acceptance, counts, keep):
    """The acceptance normalised to a run's counts outside the excesses.

    Its shape is the runs' CNN estimates', each already refit to its counts: a
    shape refit here, with the excesses left out, would bend round their edges.
    """
    expected = acceptance[keep].sum()
    return acceptance * (counts[keep].sum() / expected) if expected > 0 else acceptance * 0.0
