"""The main job: find an unknown source in a simulated 100 s CTAO observation."""

import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from gammapy.datasets import MapDataset
from gammapy.maps import Map

from .simulation import MapParameters, SimulationTemplate, SourceParameters
from .utils import atomic_path

__all__ = ["simulate_observation", "run_demo"]


def simulate_observation(livetime=100 * u.s, flux=0.5, seed=None, irf="default-z20"):
    """A counts-only dataset of one observation with a source at a random position.

    Parameters
    ----------
    livetime : `~astropy.units.Quantity`
    flux : float
        Source flux in Crab units.
    seed : int, optional
    irf : str
        Built-in IRF name or GADF file.

    Returns
    -------
    dataset : `~gammapy.datasets.MapDataset`
        Counts and safe mask only, as a real-time analysis gets them.
    truth : dict
        ``sources`` (list of dicts with ra/dec/x/y/npred) and ``background`` (expected counts).
    """
    rng = np.random.default_rng(seed)
    template = SimulationTemplate(irf)
    offset, angle = rng.uniform(0.3, 2.0), rng.uniform(0, 2 * np.pi)
    params = MapParameters(
        irf_index=0, pointing_ra=float(rng.uniform(0, 360)), pointing_dec=float(rng.uniform(-40, 60)),
        livetime=u.Quantity(livetime, "s").value, background_norm=float(rng.uniform(0.9, 1.1)),
        background_tilt=0.0, background_gradient=0.0, gradient_angle=0.0,
        sources=[SourceParameters(offset * np.cos(angle), offset * np.sin(angle), flux, 2.5, 0.0)],
    )
    sim = template.simulate(params, rng)
    geom = template.geom(SkyCoord(params.pointing_ra, params.pointing_dec, unit="deg"))
    counts = Map.from_geom(geom, data=sim.counts.astype(float))
    dataset = MapDataset(counts=counts, mask_safe=Map.from_geom(geom, data=np.ones(geom.data_shape, bool)),
                         name="demo")
    truth = dict(sources=sim.sources,
                 background=template.background(params.livetime, params.background_norm))
    return dataset, truth


def run_demo(output="gammapy-cnn-demo.png", seed=None, flux=0.5, livetime=100 * u.s):
    """Simulate, estimate the background, find candidates, print and plot them.

    Returns
    -------
    table : `~astropy.table.Table`
        The candidates.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .finders import CNNSourceFinder
    from .makers import CNNBackgroundMaker

    dataset, truth = simulate_observation(livetime=livetime, flux=flux, seed=seed)
    true_src = truth["sources"][0]
    print(f"Simulated {livetime} of CTAO-North (embedded IRF, 20 deg zenith): "
          f"{int(dataset.counts.data.sum())} counts, an unknown {flux} Crab source "
          f"({true_src['npred']:.0f} expected counts) at RA {true_src['ra']:.3f} deg, "
          f"Dec {true_src['dec']:.3f} deg")

    maker = CNNBackgroundMaker()
    finder = CNNSourceFinder()
    maker.run(dataset), finder.run(dataset)  # load the networks once
    start = time.perf_counter()
    with_background = maker.run(dataset)
    t_bkg = time.perf_counter() - start
    start = time.perf_counter()
    table = finder.run(dataset)
    t_find = time.perf_counter() - start

    true_bkg = truth["background"].sum()
    print(f"CNN background: {with_background.background.data.sum():.0f} counts "
          f"(true expectation {true_bkg:.0f}), in {1e3 * t_bkg:.1f} ms")
    print(f"CNNSourceFinder: {len(table)} candidate(s) in {1e3 * t_find:.1f} ms")
    if len(table):
        true_pos = SkyCoord(true_src["ra"], true_src["dec"], unit="deg")
        sep = SkyCoord(table["RA"], table["DEC"]).separation(true_pos).to("deg")
        table["sep_true"] = sep.round(4)
        cols = ["Source_Name", "RA", "DEC", "score", "false_alarm_rate", "significance", "excess",
                "pos_err_68", "sep_true"]
        for col in cols[1:-1]:
            table[col].info.format = ".4g"
        table[cols].pprint(max_width=200)

    cleaned = maker.clean(dataset)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5), subplot_kw={"projection": dataset.counts.geom.wcs})
    counts_image = dataset.counts.sum_over_axes(keepdims=False).smooth("0.05 deg")
    counts_image.plot(ax=axes[0], cmap="viridis", add_cbar=True)
    axes[0].set_title("Counts (smoothed 0.05 deg)")
    with_background.npred_background().sum_over_axes(keepdims=False).plot(ax=axes[1], add_cbar=True)
    axes[1].set_title("CNN background (counts/pixel)")
    cleaned.plot(ax=axes[2], cmap="magma", add_cbar=True)
    axes[2].set_title("Cleaned excess with candidates (o) and truth (+)")
    for ax in axes[1:]:
        ax.scatter(true_src["ra"], true_src["dec"], transform=ax.get_transform("icrs"), marker="+",
                   s=150, color="cyan")
    if len(table):
        axes[2].scatter(table["RA"], table["DEC"], transform=axes[2].get_transform("icrs"),
                        s=300, facecolor="none", edgecolor="white")
    fig.tight_layout()
    output = Path(output)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    print(f"Figure written to {output}")
    return table
