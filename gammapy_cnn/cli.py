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
              help="Shipped preset (default, original, benchmark, test) or a YAML file.")
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


@cli.group()
def train():
    """Train a network from a YAML recipe (see gammapy_cnn/networks/recipes)."""


def _train_command(kind):
    @click.option("--data", type=click.Path(exists=True, dir_okay=False), required=True,
                  help="Simulation file (gammapy-cnn simulate).")
    @click.option("--output", type=click.Path(dir_okay=False), required=True, help=".keras file.")
    @click.option("--config", type=click.Path(exists=True, dir_okay=False),
                  help="YAML recipe. Default: the shipped default network's recipe.")
    @click.option("--architecture", type=click.Choice(["default", "seed"]), default="default",
                  show_default=True, help="Recipe to use when no --config is given.")
    @click.option("--epochs", type=int, help="Override the recipe's number of epochs.")
    @click.option("--resume", is_flag=True, help="Continue from the last checkpoint.")
    def command(data, output, config, architecture, epochs, resume):
        from .training import TrainingConfig, recipe_path, train as run_training

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


def main():
    try:
        cli(standalone_mode=True)
    except (ValueError, FileNotFoundError) as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
