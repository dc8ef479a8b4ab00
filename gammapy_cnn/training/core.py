"""Training and fine-tuning runs, with checkpoints and model cards."""

import json
import logging
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..networks import quiet_tensorflow, sha256
from ..preprocessing import NATIVE_BINSZ, PREPROCESSING_VERSION
from ..simulation.io import SimulationReader
from ..utils import atomic_path, write_text_atomic
from .batches import MapBatches
from .config import TrainingConfig
from .losses import background_loss, heatmap_focal_loss, offset_loss

__all__ = ["train", "fine_tune", "write_card"]

log = logging.getLogger(__name__)
keras = quiet_tensorflow()


def _build(config):
    from ..networks.architectures import ARCHITECTURES

    builder = ARCHITECTURES[(config.kind, config.architecture)]
    if config.widths and config.architecture == "default":
        return builder(widths=tuple(config.widths))
    return builder()


def _strategy(name):
    """The `tf.distribute` strategy of a recipe (the default one for ``none``)."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _compile(model, config):
    if config.architecture == "original":
        loss = "mse"
    elif config.kind == "cleaner":
        loss = background_loss
    else:
        loss = {"heatmap": heatmap_focal_loss, "offset": offset_loss}
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss)


class _Checkpoint(keras.callbacks.Callback):
    """Full checkpoint (with optimizer) and progress file after every epoch."""

    def __init__(self, directory, history):
        super().__init__()
        self.directory, self.history = Path(directory), history

    def on_epoch_end(self, epoch, logs=None):
        self.history.append({k: float(v) for k, v in (logs or {}).items()})
        with atomic_path(self.directory / "checkpoint.keras") as tmp:  # keeps the .keras suffix
            self.model.save(tmp)
        state = {"epoch": epoch + 1, "history": self.history}
        write_text_atomic(self.directory / "state.json", json.dumps(state))


def train(config, output, data=None, resume=False, verbose=2):
    """Train a network following a recipe and write it with its model card.

    Parameters
    ----------
    config : `TrainingConfig` or str
        The recipe, or the path of its YAML file.
    output : str or `~pathlib.Path`
        The ``.keras`` file to write; checkpoints go to ``OUTPUT.ckpt/``.
    data : str, optional
        Simulation file; overrides ``config.data``.
    resume : bool
        Continue from the last checkpoint.
    verbose : int
        Keras verbosity (progress output).

    Returns
    -------
    card : dict
        The model card written beside the network.
    """
    if not isinstance(config, TrainingConfig):
        config = TrainingConfig.read(config)
    data = data or config.data
    if data is None:
        raise ValueError("no training data: give data= or set `data` in the recipe")
    output = Path(output)
    if output.suffix != ".keras":
        raise ValueError(f"output {output} must end in .keras")
    keras.utils.set_random_seed(config.seed)
    reader = SimulationReader(data)
    n = len(reader)
    n_val = max(int(n * config.validation_fraction), config.batch_size)
    if n - n_val < config.batch_size:
        raise ValueError(f"{data} holds {n} maps: too few for batches of {config.batch_size}")
    train_idx, val_idx = np.arange(n - n_val), np.arange(n - n_val, n)
    cleaner = None
    if config.kind == "finder" and config.architecture == "original":
        from ..networks import load_network

        cleaner = load_network("cleaner", config.cleaner, expect_architecture="original")

    ckpt_dir = output.with_name(output.name + ".ckpt")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state_file = ckpt_dir / "state.json"
    history, initial_epoch = [], 0
    with _strategy(config.distribute).scope():
        if resume and state_file.exists():
            state = json.loads(state_file.read_text())
            initial_epoch, history = state["epoch"], state["history"]
            model = keras.saving.load_model(ckpt_dir / "checkpoint.keras", safe_mode=True)
            log.info(f"resuming from epoch {initial_epoch}")
        else:
            if config.base:
                from ..networks import load_network

                # a copy: the loaded network is cached and shared, it must not be trained
                model = load_network(config.kind, config.base,
                                     expect_architecture=config.architecture).clone_model()
            else:
                model = _build(config)
            for layer in model.layers:
                layer.trainable = not any(layer.name.startswith(p) for p in config.freeze)
            _compile(model, config)

    train_seq = MapBatches(reader, config, train_idx, augment=config.augment, cleaner=cleaner,
                           epoch_seed=initial_epoch, steps=config.steps_per_epoch)
    val_seq = MapBatches(reader, config, val_idx, augment=False, cleaner=cleaner)
    start = time.perf_counter()
    if initial_epoch < config.epochs:
        model.fit(
            train_seq, validation_data=val_seq, epochs=config.epochs, initial_epoch=initial_epoch,
            verbose=verbose,
            callbacks=[_Checkpoint(ckpt_dir, history)],
        )
    elapsed = time.perf_counter() - start

    # Ship weights only: a fresh, uncompiled copy has no optimizer state.
    final = _build(config) if not config.base else keras.models.clone_model(model)
    final.set_weights(model.get_weights())
    with atomic_path(output) as tmp:  # a .keras temporary file, as Keras requires
        final.save(tmp)
    card = {
        "kind": config.kind,
        "architecture": config.architecture,
        "preprocessing_version": PREPROCESSING_VERSION,
        "native_binsz_deg": NATIVE_BINSZ.to_value("deg"),
        "package_version": __version__,
        "recipe": config.model_dump(mode="json"),
        "training_data": {
            "file": Path(data).name,
            "n_maps": int(n),
            "n_train": int(len(train_idx)),
            "n_validation": int(len(val_idx)),
            "seed": int(reader.attrs["seed"]),
            "irfs": [str(i) for i in reader.attrs["irfs"]],
            "scenario": str(reader.attrs["scenario"]),
        },
        "history": history,
        "training_seconds_this_run": round(elapsed, 1),
        "parameters": int(final.count_params()),
        "sha256": sha256(output),
    }
    reader.close()
    write_card(output, card)
    return card


def fine_tune(kind, data, output, base="default", epochs=5, learning_rate=3e-4, freeze=(),
              batch_size=16, seed=0, resume=False, verbose=2):
    """Start from a network and train it further on a (small) simulation file.

    Parameters
    ----------
    kind : {"cleaner", "finder"}
    data : str or `~pathlib.Path`
        Simulation file, e.g. a few hundred maps simulated with your IRF.
    output : str or `~pathlib.Path`
        The new ``.keras`` file.
    base : str
        Shipped network name or ``.keras`` file to start from.
    freeze : list of str
        Layer-name prefixes to keep fixed (e.g. ``["bkg_enc"]``, ``["find_enc"]``).

    Returns
    -------
    card : dict
    """
    from ..networks import load_network

    architecture = load_network(kind, base).architecture
    config = TrainingConfig(kind=kind, architecture=architecture, base=str(base), epochs=epochs,
                            learning_rate=learning_rate, freeze=list(freeze),
                            batch_size=batch_size, seed=seed)
    return train(config, output, data=data, resume=resume, verbose=verbose)


def write_card(network_path, card):
    """Write (atomically) the model card ``.json`` beside a network."""
    path = Path(network_path).with_suffix(".json")
    write_text_atomic(path, json.dumps(card, indent=1, default=float))
