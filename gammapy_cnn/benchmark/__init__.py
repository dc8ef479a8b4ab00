"""Benchmark: the CNN methods beside the gammapy methods users know, on the same maps.

`run_benchmark` simulates a held-out test set (scenario preset ``benchmark``,
seed 20261125, disjoint from the training seeds) with `gammapy_cnn.simulation`
and runs every method on the same maps, in the same process:

Background estimation
    ``cnn:NAME`` (`~gammapy_cnn.CNNBackgroundMaker`, counts only), ``ring``
    (`~gammapy.makers.RingBackgroundMaker` on the energy-integrated IRF
    dataset), ``fov`` (`~gammapy.makers.FoVBackgroundMaker`, ``scale``),
    ``irf-template`` (the IRF background as is, to show how wrong an
    unnormalised template is), ``aperture-onoff`` (ON/OFF aperture photometry
    with an OFF annulus 0.5-0.8 deg around the aperture, the IRF acceptance
    for alpha, `~gammapy.stats.WStatCountsStatistic`; gammapy's
    `~gammapy.makers.ReflectedRegionsBackgroundMaker` needs an event list,
    which the fast simulated maps do not have) and ``true-background``
    (the true expected background: the reference every other method is
    measured against, not a method).

Detection and localisation
    ``cnn:NAME`` (`~gammapy_cnn.CNNSourceFinder`), ``ring+excess``
    (ring background, `~gammapy.estimators.ExcessMapEstimator` with 0.1 deg
    correlation radius, `~gammapy.estimators.utils.find_peaks` at
    sqrt(TS) 5), ``tsmap`` (`~gammapy.estimators.TSMapEstimator` over the
    FoV-normalised IRF background, find_peaks at sqrt(TS) 5),
    ``smoothed-counts`` (template-free: 0.05 deg Gaussian-smoothed counts
    over a 0.5 deg Gaussian-smoothed local level, peaks at 5 sigma; the
    floor any method must beat) and ``fit<-METHOD`` (3D likelihood fit,
    gammapy `~gammapy.modeling.Fit`, of a point source with a power law and
    free position on the full IRF dataset with a free background norm,
    seeded from METHOD's candidate nearest to the true source).

The TS map and the fits take seconds per map; they run on the first
``n_slow`` maps only, and the detection table is also given restricted to
those maps so that every method is compared on the same ones.

The ring and FoV methods and the ON/OFF apertures need an exclusion mask;
they get the true source positions (radius 0.3 deg), as an analysis of known
sources would use a catalogue. The CNN methods get nothing but counts. This
favours the gammapy methods.

Positions are compared in pixels of the map's TAN projection (separations
below 3 deg, where the projection distorts lengths by less than 0.1%).

The simulated maps do not depend on the pointing in pixel space, so one IRF
dataset per response (`~gammapy_cnn.simulation.SimulationTemplate.reference_dataset`,
1 s) is reduced once, scaled to each map's livetime and used on the tangent
plane of one reference pointing; the reduction time is measured and
reported. ``reduce_per_map=True`` reduces one per map at its own pointing.

The subpackage has one module per job: `~gammapy_cnn.benchmark.maps` (the
test maps and their datasets), `~gammapy_cnn.benchmark.methods` (the method
wrappers), `~gammapy_cnn.benchmark.metrics` (matching and summaries),
`~gammapy_cnn.benchmark.runner` (`run_benchmark`) and
`~gammapy_cnn.benchmark.report` (`BenchmarkResult`, Markdown and figures).
Every public name is importable from `gammapy_cnn.benchmark`.
"""

from .maps import (
    EXCLUSION_RADIUS,
    REFERENCE_POINTING,
    BenchmarkMap,
    exclusion_mask,
    scaled_reference,
    simulate_benchmark_map,
)
from .methods import (
    CORRELATION_RADIUS,
    FIT_CUTOUT,
    PEAK_MIN_DISTANCE,
    PEAK_THRESHOLD,
    RING_R_IN,
    RING_WIDTH,
    SMOOTH_LEVEL,
    SMOOTH_SIGNAL,
    TS_KERNEL_WIDTH,
    aperture_onoff,
    aperture_sum,
    find_cnn,
    find_ring_excess,
    find_smoothed_counts,
    find_tsmap,
    fit_position,
    fov_dataset,
    ring_dataset,
)
from .metrics import MATCH_RADIUS, containment_radius, match_candidates
from .report import BenchmarkResult, pivot_localisation, table_to_markdown, write_figures
from .runner import (
    BENCHMARK_SEED,
    DEFAULT_SLOW_MAPS,
    EMPTY_APERTURE,
    EMPTY_APERTURE_OFFSET,
    EMPTY_APERTURES_PER_MAP,
    QUICK_MAPS,
    QUICK_SLOW_MAPS,
    SOURCE_APERTURE,
    TRAINING_SEEDS,
    run_benchmark,
)

__all__ = [
    # runner
    "BENCHMARK_SEED",
    "TRAINING_SEEDS",
    "run_benchmark",
    # maps
    "BenchmarkMap",
    "simulate_benchmark_map",
    "scaled_reference",
    "exclusion_mask",
    # methods
    "ring_dataset",
    "fov_dataset",
    "find_ring_excess",
    "find_tsmap",
    "find_smoothed_counts",
    "find_cnn",
    "fit_position",
    "aperture_sum",
    "aperture_onoff",
    # metrics
    "match_candidates",
    "containment_radius",
    # report
    "BenchmarkResult",
    "table_to_markdown",
    "pivot_localisation",
    "write_figures",
    # the fixed settings of the benchmark
    "CORRELATION_RADIUS",
    "DEFAULT_SLOW_MAPS",
    "EMPTY_APERTURE",
    "EMPTY_APERTURE_OFFSET",
    "EMPTY_APERTURES_PER_MAP",
    "EXCLUSION_RADIUS",
    "FIT_CUTOUT",
    "MATCH_RADIUS",
    "PEAK_MIN_DISTANCE",
    "PEAK_THRESHOLD",
    "QUICK_MAPS",
    "QUICK_SLOW_MAPS",
    "REFERENCE_POINTING",
    "RING_R_IN",
    "RING_WIDTH",
    "SMOOTH_LEVEL",
    "SMOOTH_SIGNAL",
    "SOURCE_APERTURE",
    "TS_KERNEL_WIDTH",
]
