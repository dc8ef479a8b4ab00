"""The real-time monitor on simulated transients: time to alert against flux, beside ring + excess map.

Usage::

    python benchmarks/monitor_transients.py --n 2 --output docs/results/monitor_transients.md

Observations of 30 min are sampled event by event, with arrival times, by
gammapy's ``MapDatasetEventSampler`` (`gammapy_cnn.simulation.simulate_observation`)
on the embedded response and on CTAO prod5 North, one source 0.3-2 deg from
the pointing in a random direction:

- **burst**: a GRB-like afterglow, flux proportional to (t - t0)^-1.2 from a
  random onset t0 (60-900 s after the start; constant over its first second),
  normalised to the flux given at 100 s after the onset;
- **flare**: an AGN at a steady 0.1 Crab, known to the monitor (a catalogue
  entry), that brightens 3 or 10 times for 5 min from a random time
  (600-1200 s): the monitor should raise a *flare* alert;
- **steady**: a source of constant flux from the start;
- **empty**: background only; every alert is false.

Each observation is replayed through `gammapy_cnn.realtime.Monitor` (default
timescales 10, 30, 100, 300, 1000 s and cumulative, shipped networks, counts
only, fluxes from the effective area) in 1 s chunks, as fast as possible.
Beside it, **ring + excess map**: on the same windows, gammapy's
``RingBackgroundMaker`` (0.5-0.8 deg ring, with the response's background as
the acceptance) and ``ExcessMapEstimator`` (0.1 deg), alerting on a
``find_peaks`` peak at the monitor's alert significance (the same trials,
the same analytic false-alarm rate per hour), and again at the equal
false rate: the lowest significance at which ring + excess gives no more
false alerts in these observations than the monitor (at a few counts Li &
Ma is far from Gaussian, so the analytic threshold gives ring many more).
A method detects the source with its first alert within 0.2 deg of it; the
delay is from the onset (burst), from the flare's start (flare) or from the
start (steady). Ring + excess has no flare rule, so flares are the monitor's
alone. Alerts farther than 0.2 deg
from every source are false; their rate per hour over all observations is
the false-alarm calibration on simulated nights.

The last section is the monitor's throughput at 10 kHz: a stream of 10 000
background-like events per second (uniform in the field, a power-law
spectrum) fed in 1 s chunks, and the seconds of data the monitor handles per
second of wall clock. Results are checkpointed per observation (``--resume``).
"""

import argparse
import json
import time
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table

from gammapy_cnn import CNNSourceFinder
from gammapy_cnn.data import event_pixels
from gammapy_cnn.example_data import gammapy_data_dir
from gammapy_cnn.realtime import DEFAULT_TIMESCALES, Monitor, false_alarm_record, replay, update_false_alarm_card
from gammapy_cnn.realtime.monitor import CUMULATIVE_EVERY
from gammapy_cnn.simulation import SimulationTemplate, light_curve_source, simulate_observation
from gammapy_cnn.simulation.irf import irf_label
from gammapy_cnn.utils import cpu_model, write_text_atomic

LIVETIME = 1800.0  # s
NEAR = 0.2  # deg: an alert this close to the source is the source
BURST_FLUXES = (0.03, 0.1, 0.3, 1.0)  # Crab, 100 s after the onset
FLARE_LEVEL, FLARE_FACTORS, FLARE_LENGTH = 0.1, (3.0, 10.0), 300.0
STEADY_FLUXES = (0.03, 0.1, 0.3)
THROUGHPUT_RATE, THROUGHPUT_SECONDS = 10_000, 120
PROD5 = "Prod5-North-20deg-AverageAz-4LSTs09MSTs.180000s-v0.1.fits.gz"
#: An empty ring (no OFF count) gives an infinite Li & Ma significance, set to the largest float
#: by ``np.nan_to_num``: no analyst would alert on it, so ring + excess is not charged for it.
EMPTY_RING = 1e300


def cases(n, rng):
    """(case, flux, source light curve nodes (s) and norms, event start of interest (s)) per observation."""
    out = []
    for flux in BURST_FLUXES:
        for _ in range(n):
            onset = float(rng.uniform(60, 900))
            after = onset + np.geomspace(1, LIVETIME - onset, 60)
            times = np.concatenate([[0.0, onset - 0.01], after])
            norms = np.where(times < onset, 0.0, (np.maximum(times - onset, 1.0) / 100.0) ** -1.2)
            out.append(("burst", flux, times, norms, onset))
    for factor in FLARE_FACTORS:
        for _ in range(n):
            start = float(rng.uniform(600, 1200))
            times = np.array([0, start - 0.01, start, start + FLARE_LENGTH, start + FLARE_LENGTH + 0.01, LIVETIME])
            norms = np.array([1, 1, factor, factor, 1, 1], float)
            out.append(("flare", FLARE_LEVEL * factor, times, norms, start))
    for flux in STEADY_FLUXES:
        for _ in range(n):
            out.append(("steady", flux, np.array([0.0, LIVETIME]), np.ones(2), 0.0))
    for _ in range(2 * n):
        out.append(("empty", 0.0, None, None, 0.0))
    return out


class RingMonitor:
    """Ring + excess map + find_peaks on the monitor's windows, alerting at the same significance."""

    def __init__(self, template, pointing, threshold, offset_max=2.5):
        from gammapy.maps import Map

        self.cube_geom = template.geom(pointing)
        self.reference = template.reference_dataset(pointing, 1 * u.s).to_image()
        self.geom = self.reference.counts.geom
        self.threshold = threshold
        self.safe = Map.from_geom(self.geom, data=(self.geom.separation(pointing).deg < offset_max)[None])
        self.exclusion = Map.from_geom(self.geom.to_image(), data=True, dtype=bool)

    def peaks(self, counts, seconds):
        import warnings

        from gammapy.estimators import ExcessMapEstimator
        from gammapy.estimators.utils import find_peaks
        from gammapy.makers import RingBackgroundMaker

        dataset = self.reference.copy(name="window")
        dataset.counts.data = counts[None].astype(float)
        dataset.background.data = self.reference.background.data * seconds
        dataset.exposure.data = self.reference.exposure.data * seconds
        dataset.mask_safe = self.safe
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore")
            onoff = RingBackgroundMaker(r_in=0.5 * u.deg, width=0.3 * u.deg,
                                        exclusion_mask=self.exclusion).run(dataset)
            sqrt_ts = ExcessMapEstimator(correlation_radius=0.1 * u.deg,
                                         selection_optional=[]).run(onoff)["sqrt_ts"]
            sqrt_ts.data = np.nan_to_num(sqrt_ts.data)
            return find_peaks(sqrt_ts.sum_over_axes(keepdims=False), threshold=self.threshold,
                              min_distance=0.1 * u.deg)


def ring_peaks(ring, run, source):
    """Every ring peak at or above ``ring.threshold`` in the monitor's windows.

    Rows of (end of the window [s], significance, near the source, spot): the
    spot (0.1 deg rounded position) counts a false alert once, as the
    monitor's tracks do. All windows are searched, also after the source is
    found, so that a higher threshold can be applied afterwards.
    """
    seconds = (run.events.time - run.tstart).to_value("s")
    # binned like the monitor's maps (its energy range), then summed over energy
    flat = event_pixels(ring.cube_geom, run.events.radec, run.events.energy)
    size = ring.geom.data_shape[-1] * ring.geom.data_shape[-2]
    pixels = np.where(flat >= 0, flat % size, -1)
    due = []
    for t in DEFAULT_TIMESCALES:
        step = CUMULATIVE_EVERY if t is None else t.to_value("s")
        for stop in np.arange(step, LIVETIME + 1e-6, step):
            due.append((stop, 0.0 if t is None else stop - step))
    found = []
    for stop, start in sorted(due):
        pick = (seconds >= start) & (seconds < stop) & (pixels >= 0)
        counts = np.bincount(pixels[pick], minlength=size)
        for row in ring.peaks(counts.reshape(ring.geom.data_shape[-2:]), stop - start):
            position = SkyCoord(row["ra"], row["dec"], unit="deg")
            near = source is not None and position.separation(source).deg < NEAR
            spot = (round(float(row["ra"]), 1), round(float(row["dec"]), 1))
            found.append((float(stop), float(row["value"]), bool(near), spot))
    return found


def ring_alerts(peaks, threshold):
    """(end of the first window with a peak near the source at ``threshold``, false alerts in the
    whole observation), as the monitor's columns count them."""
    first, false = np.nan, set()
    for stop, significance, near, spot in peaks:
        if significance < threshold or significance >= EMPTY_RING:
            continue
        if near:  # the peaks are in time order: the first one near the source is the alert
            first = stop if np.isnan(first) else first
        else:
            false.add(tuple(spot))
    return first, len(false)


def equal_rate_threshold(rows):
    """The ring's threshold at which it gives no more false alerts than the CNN monitor on ``rows``.

    The lowest significance above every false ring peak when the monitor gave
    none; otherwise the monitor's own threshold (ring then has at least as many).
    """
    threshold = rows[0]["threshold"]
    if sum(r["cnn_false"] for r in rows):
        return threshold
    false = [p[1] for r in rows for p in r.get("ring_peaks", []) if not p[2] and p[1] < EMPTY_RING]
    return max([threshold] + [np.nextafter(s, np.inf) for s in false])


def simulate(template, case, index, seed):
    """One observation of a case: (event list, pointing, source position or None, reference time [s])."""
    kind, flux, times, norms, start = case
    rng = np.random.default_rng(seed)
    pointing = SkyCoord(float(rng.uniform(0, 360)), float(rng.uniform(-50, 50)), unit="deg")
    source = None
    models = []
    if kind != "empty":
        source = pointing.directional_offset_by(rng.uniform(0, 360) * u.deg, rng.uniform(0.3, 2.0) * u.deg)
        level = flux / norms.max() if kind == "flare" else flux
        models.append(light_curve_source(source, level, times * u.s, norms, name="source"))
    run = simulate_observation(template, pointing, LIVETIME * u.s, models, seed=seed, obs_id=index + 1)
    return run, pointing, source, start


def observe_ring(template, run, pointing, source, threshold):
    """Ring + excess on an observation: its peaks (`ring_peaks`), from which every ring column is derived."""
    return ring_peaks(RingMonitor(template, pointing, threshold), run, source)


def ring_delay(row, threshold):
    """Delay [s] of ring + excess's first alert on the source at ``threshold`` (NaN: none)."""
    return ring_alerts(row["ring_peaks"], threshold)[0] - row["start"]


def observe(template, finder, case, index, seed, with_ring):
    kind, flux = case[:2]
    began = time.perf_counter()
    run, pointing, source, start = simulate(template, case, index, seed)
    catalog = Table({"RA": [source.ra.deg], "DEC": [source.dec.deg], "NAME": ["AGN"]}) if kind == "flare" else None
    monitor = Monitor.from_observation(run, finder, catalog=catalog)
    alerts = replay(run, monitor)
    on_source = [a for a in alerts if source is not None
                 and SkyCoord(a.ra, a.dec, unit="deg").separation(source).deg < NEAR]
    wanted = [a for a in on_source if a.kind == ("flare" if kind == "flare" else "new")]
    first = wanted[0] if wanted else None
    t_first = (first.time - run.tstart.tt.mjd) * 86400 if first else np.nan
    row = dict(case=kind, flux=flux, index=index, seed=seed, start=start, events=len(run.events.table),
               offset=float(source.separation(pointing).deg) if source is not None else np.nan,
               cnn_delay=t_first - start if first else np.nan,
               cnn_error=float(SkyCoord(first.ra, first.dec, unit="deg").separation(source).deg) if first else np.nan,
               cnn_pos_err_68=first.pos_err_68 if first else np.nan,
               cnn_timescale=first.timescale if first else np.nan,
               cnn_flux_crab=first.flux_crab if first else np.nan,
               cnn_false=len(alerts) - len(on_source),
               threshold=monitor._alert_significance())
    if with_ring and kind != "flare":
        row["ring_peaks"] = observe_ring(template, run, pointing, source, row["threshold"])
    row["seconds"] = time.perf_counter() - began
    return row


def throughput(template, finder, seed):
    """Seconds of data per second of wall clock at THROUGHPUT_RATE events per second."""
    from astropy.time import Time

    rng = np.random.default_rng(seed)
    pointing = SkyCoord(120.0, 10.0, unit="deg")
    tstart = Time("2026-01-01T00:00:00", scale="tt")
    mjdref = {"MJDREFI": int(tstart.mjd), "MJDREFF": tstart.mjd % 1, "TIMESYS": "tt", "TIMEUNIT": "s"}
    chunks = []  # drawn first: the clock runs on the monitor only
    for second in range(THROUGHPUT_SECONDS):
        n = rng.poisson(THROUGHPUT_RATE)
        radius = 2.5 * np.sqrt(rng.uniform(0, 1, n))
        positions = pointing.directional_offset_by(rng.uniform(0, 360, n) * u.deg, radius * u.deg)
        energy = 0.05 * (1 - rng.uniform(0, 1, n)) ** (-1 / 1.7)  # index 2.7 above 50 GeV
        chunks.append(Table({"TIME": np.sort(second + rng.uniform(0, 1, n)) * u.s, "RA": positions.ra,
                             "DEC": positions.dec, "ENERGY": energy * u.TeV}, meta=mjdref))
    for _ in range(2):  # the first pass loads the networks and traces every batch size; the second is timed
        monitor = Monitor(pointing, tstart, finder)
        began = time.perf_counter()
        for second, table in enumerate(chunks):
            monitor.feed(table, until=tstart + (second + 1) * u.s)
        wall = time.perf_counter() - began
    return dict(rate=THROUGHPUT_RATE, seconds=THROUGHPUT_SECONDS, events=sum(len(c) for c in chunks), wall=wall,
                data_per_wall=THROUGHPUT_SECONDS / wall, windows=len(monitor.windows))


def _ring_cells(cell, matched):
    """Alerted and median delay of ring + excess at the monitor's threshold and at ``matched``."""
    if cell[0]["case"] == "flare" or "ring_peaks" not in cell[0]:
        return ["-"] * 4
    out = []
    for delays in ([ring_delay(r, r["threshold"]) for r in cell], [ring_delay(r, matched) for r in cell]):
        out += [f"{sum(np.isfinite(d) for d in delays)}/{len(cell)}", f"{_median(delays):.0f}"]
    return out


def _median(values):
    values = np.asarray([v for v in values if np.isfinite(v)])
    return float(np.median(values)) if len(values) else np.nan


def markdown(rows, speed, args, elapsed):
    lines = ["# The real-time monitor on simulated transients", "", __doc__.split("\n\n", 2)[2].strip(), ""]
    for irf in dict.fromkeys(r["irf"] for r in rows):
        group = [r for r in rows if r["irf"] == irf]
        matched = equal_rate_threshold(group)
        lines += [f"## `{irf}`", "",
                  "| case | flux [Crab] | observations | CNN alerted | CNN median delay [s] | ring + excess alerted "
                  "| ring median delay [s] | ring, equal false rate: alerted | ring, equal false rate: median "
                  "delay [s] | CNN position error, median [deg] | CNN pos_err_68, median [deg] "
                  "| CNN flux at alert / true, median |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for case in ("burst", "flare", "steady"):
            for flux in dict.fromkeys(r["flux"] for r in group if r["case"] == case):
                cell = [r for r in group if r["case"] == case and r["flux"] == flux]
                cnn = sum(np.isfinite(r["cnn_delay"]) for r in cell)
                ring = _ring_cells(cell, matched)
                lines.append(
                    f"| {case} | {flux:g} | {len(cell)} | {cnn}/{len(cell)} | "
                    f"{_median(r['cnn_delay'] for r in cell):.0f} | {' | '.join(ring)} | "
                    f"{_median(r['cnn_error'] for r in cell):.3f} | {_median(r['cnn_pos_err_68'] for r in cell):.3f} | "
                    f"{_median(r['cnn_flux_crab'] / r['flux'] for r in cell if r['case'] != 'burst'):.2f} |")
        hours = len(group) * LIVETIME / 3600
        cnn_false = sum(r["cnn_false"] for r in group)
        ring_rows = [r for r in group if "ring_peaks" in r]
        ring_false = sum(ring_alerts(r["ring_peaks"], r["threshold"])[1] for r in ring_rows)
        ring_hours = len(ring_rows) * LIVETIME / 3600
        lines += ["", f"False alerts (farther than {NEAR} deg from every source) in {hours:.1f} h of data: "
                  f"CNN monitor {cnn_false} ({cnn_false / hours:.2f} per hour); ring + excess {ring_false} in "
                  f"{ring_hours:.1f} h ({ring_false / max(ring_hours, 1e-9):.2f} per hour). The alert threshold, "
                  f"{group[0]['threshold']:.2f} sigma, is set for 0.1 per hour by the analytic trials count. "
                  f"*Equal false rate*: ring + excess alerting at {matched:.2f} sigma, just above its highest "
                  f"false peak in these observations, so that it too gives no more false alerts here than "
                  f"the CNN monitor (the lowest such threshold: the most favourable to ring).", ""]
    hours = len(rows) * LIVETIME / 3600
    false = sum(r["cnn_false"] for r in rows)
    upper = false_alarm_record(false, hours)["upper_limit_95_per_hour"]
    lines += ["## False-alarm calibration on simulated nights", "",
              f"All responses: {false} false alert(s) of the CNN monitor in {hours:.1f} h "
              f"({false / hours:.3f} per hour; 95% upper limit {upper:.2f} per hour) against the analytic "
              f"0.1 per hour the threshold is set for. The H.E.S.S. source-free runs are in "
              f"`docs/results/monitor_hess.md`; both are kept in the monitor's false-alarm card "
              f"(`gammapy_cnn/realtime/false_alarm_card.json`, written with `--update-card`).", ""]
    if speed:
        lines += ["## Throughput at 10 kHz", "",
                  f"{speed['events']} events in {speed['seconds']} s of data ({speed['rate']} per second) fed "
                  f"in 1 s chunks through the default timescales ({speed['windows']} windows): "
                  f"{speed['wall']:.1f} s of wall clock, {speed['data_per_wall']:.2f} s of data per second "
                  f"(>= 1: the monitor keeps up in real time).", ""]
    lines += [f"Command: `python benchmarks/monitor_transients.py --n {args.n} --seed {args.seed} --output "
              f"{args.output}`; machine: {cpu_model()}, 2 cores, shared with other jobs; {elapsed / 60:.1f} min. "
              f"Rows: `{args.output.with_suffix('.jsonl').name}`."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2, help="observations per case and flux (empty: twice)")
    parser.add_argument("--seed", type=int, default=777000)
    parser.add_argument("--irf", nargs="+", default=None, help="default: embedded and prod5")
    parser.add_argument("--no-ring", action="store_true")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in the .jsonl")
    parser.add_argument("--redo", nargs="+", default=(), choices=["burst", "flare", "steady", "empty"],
                        help="with --resume: observe these cases again (their rows are replaced)")
    parser.add_argument("--redo-ring", action="store_true",
                        help="with --resume: run ring + excess again on the rows' observations (the monitor's "
                             "columns are kept)")
    parser.add_argument("--update-card", action="store_true",
                        help="record the false alerts of all observations in the monitor's false-alarm card")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    data = gammapy_data_dir()
    irfs = args.irf or ["default-z20", str(data / "cta-caldb" / PROD5)]
    checkpoint = args.output.with_suffix(".jsonl")
    rows = []
    if checkpoint.exists():
        if args.resume:
            rows = [row for row in map(json.loads, checkpoint.read_text().splitlines())
                    if row["case"] not in args.redo]
            write_text_atomic(checkpoint, "".join(json.dumps(row, default=float) + "\n" for row in rows))
        else:
            checkpoint.unlink()
    done = {(r["irf"], r["index"]) for r in rows}
    templates = {irf_label(irf): SimulationTemplate(irf) for irf in irfs}
    if args.redo_ring:
        all_cases = cases(args.n, np.random.default_rng(args.seed))
        for row in rows:
            if row["case"] == "flare" or "ring_peaks" in row:
                continue
            template = templates[row["irf"]]
            run, pointing, source, row["start"] = simulate(template, all_cases[row["index"]], row["index"],
                                                           row["seed"])
            row["ring_peaks"] = observe_ring(template, run, pointing, source, row["threshold"])
            write_text_atomic(checkpoint, "".join(json.dumps(r, default=float) + "\n" for r in rows))
            print(f"{row['irf']} {row['case']} {row['flux']:g}: ring delay {ring_delay(row, row['threshold']):.0f} s, "
                  f"{len(row['ring_peaks'])} peaks", flush=True)
    finder = CNNSourceFinder()
    began = time.time()
    for irf in irfs:
        template = templates[irf_label(irf)]
        for index, case in enumerate(cases(args.n, np.random.default_rng(args.seed))):
            if (irf_label(irf), index) in done:
                continue
            row = observe(template, finder, case, index, args.seed + index, not args.no_ring)
            row["irf"] = irf_label(irf)
            rows.append(row)
            with open(checkpoint, "a") as out:  # one line per observation: a crash loses at most one
                out.write(json.dumps(row, default=float) + "\n")
            ring = ring_alerts(row.get("ring_peaks", []), row["threshold"])
            print(f"{row['irf']} {row['case']} {row['flux']:g}: CNN delay {row['cnn_delay']:.0f} s, ring "
                  f"{ring[0] - row['start']:.0f} s, false {row['cnn_false']}/{ring[1]} "
                  f"({row['seconds']:.0f} s)", flush=True)
    speed = None if args.no_throughput else throughput(templates[irf_label(irfs[0])], finder, args.seed)
    write_text_atomic(args.output, markdown(rows, speed, args, time.time() - began))
    if args.update_card:
        record = false_alarm_record(sum(r["cnn_false"] for r in rows), len(rows) * LIVETIME / 3600,
                                    threshold=rows[0]["threshold"], responses=sorted({r["irf"] for r in rows}),
                                    observations=len(rows),
                                    command=f"python benchmarks/monitor_transients.py --n {args.n} --seed "
                                            f"{args.seed} --update-card --output {args.output}")
        update_false_alarm_card("simulated_nights", record)


if __name__ == "__main__":
    main()
