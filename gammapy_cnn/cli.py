"""The ``gammapy-cnn`` command line: thin wrappers over the package's modules."""

import logging
import sys
import time
from pathlib import Path

import click

from . import __version__

log = logging.getLogger("gammapy_cnn")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gammapy-cnn")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def cli(log_level):
    """gammapy-cnn: CNN background estimation and source finding for gammapy."""
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--n", "n_maps", type=int, required=True, help="Number of maps.")
@click.option("--output", type=click.Path(dir_okay=False), required=True, help="HDF5 file to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the file.")
@click.option("--scenario", default="default", show_default=True,
              help="Shipped preset (default, calibration, original, benchmark, test) or a YAML file.")
@click.option("--irf", multiple=True,
              help="IRF name or GADF file; repeat for several. Overrides the scenario's.")
@click.option("--n-jobs", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--backend", type=click.Choice(["multiprocessing", "ray"]), default="multiprocessing",
              show_default=True, help="gammapy parallel backend.")
@click.option("--chunk-size", type=int, default=32, show_default=True,
              help="Maps per task and per checkpoint.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run (its .partial file).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def simulate(n_maps, output, seed, scenario, irf, n_jobs, backend, chunk_size, resume, progress):
    """Simulate labelled maps (counts, true background and signal, sources) into HDF5."""
    from .simulation import Scenario
    from .simulation.batch import simulate_file

    scn = load_scenario(scenario)
    if irf:
        scn = Scenario.from_dict({**scn.model_dump(mode="json"), "irf": list(irf)})
    rate = simulate_file(output, n_maps, scenario=scn, seed=seed, n_jobs=n_jobs, backend=backend,
                         chunk_size=chunk_size, resume=resume, progress=progress)
    click.echo(f"wrote {n_maps} maps to {output}: {rate:.1f} maps/s")


def load_scenario(scenario):
    from .simulation import Scenario

    path = Path(scenario)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return Scenario.read(path)
    return Scenario.preset(scenario)


@cli.command()
@click.option("--output", type=click.Path(dir_okay=False), default="gammapy-cnn-demo.png",
              show_default=True, help="Figure to write.")
@click.option("--seed", type=int, default=None, help="Seed (default: a new sky each time).")
@click.option("--flux", type=float, default=0.5, show_default=True, help="Source flux [Crab].")
@click.option("--livetime", default="100 s", show_default=True, help="Observation livetime.")
def demo(output, seed, flux, livetime):
    """Find an unknown source in a simulated 100 s CTAO observation."""
    import astropy.units as u

    from .demo import run_demo

    run_demo(output=output, seed=seed, flux=flux, livetime=u.Quantity(livetime))


@cli.group()
def train():
    """Train a network from a YAML recipe (see gammapy_cnn/networks/recipes)."""


def _train_command(kind):
    @click.option("--data", type=click.Path(exists=True, dir_okay=False), required=True,
                  help="Simulation file (gammapy-cnn simulate).")
    @click.option("--output", type=click.Path(dir_okay=False), required=True, help=".keras file.")
    @click.option("--config", type=click.Path(exists=True, dir_okay=False),
                  help="YAML recipe. Default: the shipped default network's recipe.")
    @click.option("--architecture", type=click.Choice(["default", "original", "seed"]), default="default",
                  show_default=True,
                  help="Recipe to use when no --config is given (seed: former name of original).")
    @click.option("--epochs", type=int, help="Override the recipe's number of epochs.")
    @click.option("--resume", is_flag=True, help="Continue from the last checkpoint.")
    def command(data, output, config, architecture, epochs, resume):
        from .training import TrainingConfig, recipe_path
        from .training import train as run_training

        cfg = TrainingConfig.read(config or recipe_path(kind, architecture))
        if cfg.kind != kind:
            raise click.BadParameter(f"recipe {config} trains a {cfg.kind}, not a {kind}")
        if epochs is not None:
            cfg = cfg.model_copy(update={"epochs": epochs})
        card = run_training(cfg, output, data=data, resume=resume)
        click.echo(f"wrote {output} (sha256 {card['sha256'][:12]}...) and its model card")

    command.__doc__ = f"Train a {kind} network."
    return command


train.command("cleaner")(_train_command("cleaner"))
train.command("finder")(_train_command("finder"))


@cli.command("fine-tune")
@click.argument("kind", type=click.Choice(["cleaner", "finder"]))
@click.option("--base", default="default", show_default=True, help="Shipped name or .keras file.")
@click.option("--data", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--output", type=click.Path(dir_okay=False), required=True)
@click.option("--epochs", type=int, default=5, show_default=True)
@click.option("--learning-rate", type=float, default=3e-4, show_default=True)
@click.option("--freeze", multiple=True, help="Freeze layers whose name starts with this (repeat).")
@click.option("--resume", is_flag=True)
def fine_tune(kind, base, data, output, epochs, learning_rate, freeze, resume):
    """Fine-tune a network on a small set (e.g. simulations with your own IRF)."""
    from .training import fine_tune as run_fine_tune

    card = run_fine_tune(kind, data, output, base=base, epochs=epochs,
                         learning_rate=learning_rate, freeze=list(freeze), resume=resume)
    click.echo(f"wrote {output} (sha256 {card['sha256'][:12]}...) and its model card")


@cli.command("find")
@click.argument("events", type=click.Path(exists=True))
@click.option("--obs-id", "obs_ids", type=int, multiple=True,
              help="Observation id to analyse (repeat). Default: all in the data store.")
@click.option("--duration", help="Window length with a unit, e.g. 100s. Default: whole runs.")
@click.option("--step", help="Offset between window starts, e.g. 50s. Default: half the duration.")
@click.option("--stack", is_flag=True, help="Without --duration: stack all runs into one map.")
@click.option("--output", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder for candidates.ecsv, candidates_windows.ecsv and candidates.reg.")
@click.option("--finder", "finder_name", default="default", show_default=True,
              help="Shipped finder network name or .keras file.")
@click.option("--background-network", "background_network", default="default", show_default=True,
              help="Shipped background network name or .keras file; or 'template' (whole runs only): each "
                   "run's IRF background, normalised outside the excesses found in the counts "
                   "(AutoExclusionFoVBackgroundMaker), for sources of ~1 deg.")
@click.option("--cleaner", "cleaner_name", hidden=True,
              help="Former name of --background-network (deprecated).")
@click.option("--threshold", type=float, help="Minimum score. Default: the network's calibrated one.")
@click.option("--max-candidates", type=click.IntRange(min=1), default=50, show_default=True,
              help="At most this many candidates per window, best first.")
@click.option("--no-rescue", is_flag=True,
              help="Score rule only: drop below-threshold peaks even when their local fit is significant.")
@click.option("--energy-min", help="Lower energy cut, e.g. 0.3TeV, or 'safe' (each run's threshold).")
@click.option("--energy-max", help="Upper energy cut, e.g. 100TeV.")
@click.option("--offset-max", default="2.5deg", show_default=True,
              help="Mask pixels farther than this from the pointing.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def find(events, obs_ids, duration, step, stack, output, finder_name, background_network, cleaner_name,
         threshold, max_candidates, no_rescue, energy_min, energy_max, offset_max, overwrite):
    """Find sources in sliding time windows of DL3 runs, window after window.

    EVENTS is a DL3 data store folder or a single event file. Candidates are
    printed as each window is processed, then written to --output.
    """
    import astropy.units as u

    from .data import read_observations
    from .finders import CNNSourceFinder
    from .realtime import RealtimeResult, find_in_windows, parse_quantity

    def quantity(text, unit, option):
        if text is None:
            return None
        try:
            return parse_quantity(text, unit, option)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint=option) from None

    if cleaner_name is not None:
        if background_network != "default":
            raise click.BadParameter("give --background-network only (--cleaner is its former name)",
                                     param_hint="--cleaner")
        background_network = cleaner_name
    duration_q = quantity(duration, u.s, "--duration")
    step_q = quantity(step, u.s, "--step")
    if step_q is not None and duration_q is None:
        raise click.BadParameter("--step needs --duration", param_hint="--step")
    if stack and duration_q is not None:
        raise click.BadParameter("--stack is for whole runs; drop --duration", param_hint="--stack")
    template = background_network == "template"
    if template and duration_q is not None:
        raise click.BadParameter("'template' is for whole runs; drop --duration", param_hint="--background-network")
    e_min = "safe" if energy_min == "safe" else quantity(energy_min, u.TeV, "--energy-min")
    e_max = quantity(energy_max, u.TeV, "--energy-max")
    offset = quantity(offset_max, u.deg, "--offset-max")
    if threshold is not None and not 0 <= threshold <= 1:
        raise click.BadParameter(f"a score between 0 and 1, got {threshold}", param_hint="--threshold")

    try:
        RealtimeResult.output_paths(output, overwrite=overwrite)  # fail before the run, not after
        observations = read_observations(events, list(obs_ids) or None)
        finder = CNNSourceFinder(network=finder_name, background_network=None if template else background_network,
                                 threshold=threshold, max_candidates=max_candidates, rescue=not no_rescue)
        windows = []
        for window in find_in_windows(observations, finder, duration_q, step_q, stack=stack,
                                      energy_min=e_min, energy_max=e_max, offset_max=offset,
                                      background_template=template):
            click.echo(window.describe())
            for line in window.candidate_lines():
                click.echo(line)
            windows.append(window)
        meta = {"finder": str(finder_name), "cleaner": str(background_network),
                "threshold": finder.threshold, "events": str(events)}
        result = RealtimeResult(windows, meta=meta)
        paths = result.write(output, overwrite=overwrite)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    n_candidates = sum(len(w.candidates) for w in windows)
    click.echo(f"{len(windows)} window(s), {n_candidates} candidate(s); median latency "
               f"{result.median_latency.to_value('s'):.3f} s per window")
    click.echo(f"wrote {paths['candidates']}, {paths['windows']} and {paths['regions']}")


@cli.command()
@click.argument("events", type=click.Path(exists=True), required=False)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML file of settings (gammapy_cnn.realtime.MonitorConfig); options given here override it.")
@click.option("--obs-id", "obs_ids", type=int, multiple=True,
              help="Observation id to monitor (repeat). Default: all in the data store.")
@click.option("--follow", "follow_dir", type=click.Path(exists=True, file_okay=False),
              help="Watch this folder instead of EVENTS: every DL3 file in it, and each new one as it "
                   "arrives (move finished files in).")
@click.option("--idle-exit", type=float,
              help="With --follow: stop after this many seconds without a new file. Default: never.")
@click.option("--poll", type=float, help="With --follow: seconds between looks. Default 1.")
@click.option("--alerts", "alerts", type=click.Path(file_okay=False),
              help="Folder for the VOEvent files, alerts.ecsv, tracks and light curves (or `alerts:` in --config).")
@click.option("--timescales", help="Comma-separated window lengths with units; 'cumulative' for the whole "
              "exposure so far. Default: 10s,30s,100s,300s,1000s,cumulative.")
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False),
              help="FITS or ECSV table of known sources (RA, DEC, optional NAME): their tracks alert on flares only.")
@click.option("--chunk", help="Data per step of the replay. Default 1s.")
@click.option("--replay-speed", type=float,
              help="1: as in real time, 2: twice as fast... Default: as fast as possible.")
@click.option("--finder", "finder", help="Shipped finder network name or .keras file. Default: default.")
@click.option("--background-network", "background_network",
              help="Shipped background network name or .keras file. Default: default.")
@click.option("--role", type=click.Choice(["test", "observation"]),
              help="VOEvent role of the packets (replays are tests). Default: test.")
def monitor(events, config_path, obs_ids, follow_dir, **options):
    """Replay DL3 runs through the real-time monitor: tracks, light curves and VOEvent alerts.

    EVENTS is a DL3 data store folder or a single event file; or, with
    --follow DIR, the DL3 files of a folder, taken as they arrive. Each run's
    events are fed in chunks, as they would arrive; every timescale's windows
    go through the finder as they close. Alerts are printed and written to
    --alerts as they are raised; Ctrl-C stops after writing the current run's
    tracks and light curves.
    """
    import astropy.units as u
    import numpy as np
    from astropy.table import Table
    from pydantic import ValidationError

    from .data import read_observations
    from .finders import CNNSourceFinder
    from .realtime import AlertWriter, Monitor, MonitorConfig, new_files, replay
    from .utils import atomic_path, to_quantity

    def monitor_run(observation):
        run = Monitor.from_observation(observation, finder, catalog=known, alert_writer=writer,
                                       **config.monitor_kwargs())
        if run.to_flux is None:
            click.echo(f"run {observation.obs_id}: no effective area, light curves in counts only")
        try:
            for alert in replay(observation, run, chunk=step, speed=config.replay_speed):
                click.echo(f"ALERT {alert.alert_id} ({alert.kind}): RA {alert.ra:.3f} DEC {alert.dec:.3f} "
                           f"+- {alert.pos_err_68:.3f} deg, {alert.significance:.1f} sigma on "
                           f"{'cumulative' if np.isnan(alert.timescale) else f'{alert.timescale:g} s'}"
                           f", latency {alert.latency:.3f} s")
        finally:  # also on Ctrl-C: what the run has seen so far is written
            tracks = run.tracks_table()
            for label, table in (("tracks", tracks), ("light_curves", run.light_curves())):
                with atomic_path(Path(config.alerts) / f"{label}_{observation.obs_id}.ecsv") as tmp:
                    table.write(tmp, format="ascii.ecsv", overwrite=True)
            click.echo(f"run {observation.obs_id}: {len(run.windows)} windows, {len(tracks)} tracks, "
                       f"{len(run.alerts)} alert(s)")

    writer = None
    try:
        if (events is None) == (follow_dir is None):
            raise ValueError("give EVENTS (a data store or an event file) or --follow DIR, not both")
        config = MonitorConfig.read(config_path) if config_path else MonitorConfig()
        given = {name: value for name, value in options.items() if value is not None}
        if "timescales" in given:
            given["timescales"] = given["timescales"].split(",")
        config = MonitorConfig(**{**config.model_dump(), **given})
        if config.alerts is None:
            raise ValueError("give --alerts DIR (or `alerts:` in --config): where the alerts are written")
        step = to_quantity(config.chunk, u.s, "chunk", positive=True)
        known = Table.read(config.catalog) if config.catalog else None
        finder = CNNSourceFinder(network=config.finder, background_network=config.background_network)
        writer = AlertWriter(config.alerts, role=config.role)
        if follow_dir is None:
            for observation in read_observations(events, list(obs_ids) or None):
                monitor_run(observation)
        else:
            click.echo(f"following {follow_dir} (Ctrl-C to stop)")
            for path in new_files(follow_dir, poll=config.poll, idle_exit=config.idle_exit):
                try:  # a bad file is reported and skipped (and read again if it changes): the night goes on
                    observations = read_observations(path, list(obs_ids) or None)
                except (ValueError, OSError) as error:
                    click.echo(f"skipped {path.name}: {error}", err=True)
                    continue
                for observation in observations:
                    monitor_run(observation)
    except KeyboardInterrupt:
        click.echo("stopped (Ctrl-C)")
    except ValidationError as error:
        raise click.ClickException(f"monitor settings: {error}") from None
    except (ValueError, FileNotFoundError, OSError) as error:
        raise click.ClickException(str(error)) from None
    if writer is not None:
        click.echo(f"alerts in {writer.log_path}")


@cli.command()
@click.option("--irf", help="IRF name or GADF file. Default: the scenario's (default-z20).")
@click.option("--n", "n_maps", type=int, help="Number of test maps. Default 300 (12 with --quick).")
@click.option("--quick", is_flag=True, help="Few maps, TS map and fits on 2 maps: a smoke run.")
@click.option("--output", type=click.Path(file_okay=False), default="benchmark", show_default=True,
              help="Directory for the Markdown, ECSV tables and figures.")
@click.option("--seed", type=int, default=20261125, show_default=True,
              help="Seed of the held-out test set (the training seeds are refused).")
@click.option("--cleaner", "cleaners", multiple=True,
              help="Background network, shipped name or .keras file; repeat. Default: default, original.")
@click.option("--finder", "finders", multiple=True,
              help="Finder network, shipped name or .keras file; repeat. Default: default, original.")
@click.option("--n-slow", type=int,
              help="Maps with the TS map and the likelihood fits. Default 30 (2 with --quick).")
@click.option("--format", "stdout_format", type=click.Choice(["markdown", "ecsv"]),
              default="markdown", show_default=True, help="Format of the tables on stdout.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def benchmark(irf, n_maps, quick, output, seed, cleaners, finders, n_slow, stdout_format, progress):
    """Compare the CNN methods with gammapy's (ring, FoV, TS map, fit) on held-out simulations."""
    import io
    import shlex

    from .benchmark import run_benchmark

    command = shlex.join(["gammapy-cnn"] + sys.argv[1:])
    result = run_benchmark(
        n=n_maps, irf=irf, seed=seed, quick=quick, cleaners=cleaners or ("default", "original"),
        finders=finders or ("default", "original"), n_slow=n_slow, output=output, progress=progress,
        command=command,
    )
    if stdout_format == "markdown":
        click.echo(result.to_markdown())
    else:
        for name in result.SUMMARIES:
            buffer = io.StringIO()
            result.tables[name].write(buffer, format="ascii.ecsv")
            click.echo(f"# table: {name}\n{buffer.getvalue()}")
    click.echo(f"wrote the tables (Markdown, ECSV) and figures to {output}", err=True)


@cli.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--output", type=click.Path(file_okay=False),
              help="Output folder, relative to the current one. Default: the config's general.outdir "
                   "(gammapy's default '.': the current folder).")
@click.option("--overwrite", is_flag=True, help="Replace products already in the output folder.")
@click.option("--steps", help="Comma-separated steps (default: observations,datasets,find-sources).")
@click.option("--figure/--no-figure", default=True, show_default=True,
              help="Write summary.png (3D analyses).")
@click.option("--models", "models_file", type=click.Path(exists=True, dir_okay=False),
              help="gammapy models YAML for the fit, flux-points and light-curve steps.")
def analysis(config, output, overwrite, steps, figure, models_file):
    """Run a gammapy analysis config with CNN background and source finding.

    CONFIG is a gammapy AnalysisConfig YAML that may use `background: method:
    cnn` and a `cnn:` section (see examples/configs), 3D or 1D (an ON-region
    spectrum). Writes the datasets, the candidates (ECSV, DS9 regions, seed
    models), the fitted models, flux points and a summary figure into
    --output, else the config's general.outdir ('.' by default: the current folder).
    """
    from .analysis import CNNAnalysis, CNNAnalysisConfig

    cfg = CNNAnalysisConfig.read(config)
    start = time.perf_counter()
    result = CNNAnalysis(cfg)
    pending_models = models_file
    for step in steps.split(",") if steps else result.default_steps:
        if pending_models and step.replace("_", "-") in ("fit", "flux-points", "light-curve"):
            result.read_models(pending_models)  # gammapy sets models on existing datasets only
            pending_models = None
        result.run([step])
    try:
        paths = result.write(output or cfg.general.outdir, overwrite=overwrite, figure=figure)
    except (FileExistsError, RuntimeError) as error:
        raise click.ClickException(str(error)) from None
    done = "analysis done" if result.candidates is None else f"{len(result.candidates)} candidate(s)"
    click.echo(f"{done} in {time.perf_counter() - start:.1f} s; wrote "
               + ", ".join(str(p) for p in paths.values()))


def main():
    try:
        cli(standalone_mode=True)
    except (ValueError, FileNotFoundError) as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
