import json

import numpy as np

from gammapy_cnn.networks import load_network
from gammapy_cnn.simulation.io import SimulationReader
from gammapy_cnn.training import MapBatches, TrainingConfig, fine_tune, train, with_random_holes


def test_mirrored_strategy_on_cpu(sim_file, tmp_path):
    """tf.distribute.MirroredStrategy (the multi-GPU path) trains on the CPU too."""
    config = TrainingConfig(kind="cleaner", epochs=1, batch_size=8, steps_per_epoch=2,
                            validation_fraction=0.15, widths=[4, 4, 4, 4], distribute="mirrored",
                            mask_holes=0.5)
    card = train(config, tmp_path / "mirrored.keras", data=sim_file, verbose=0)
    assert card["recipe"]["distribute"] == "mirrored"
    assert np.isfinite(card["history"][-1]["loss"])
    load_network("cleaner", tmp_path / "mirrored.keras")


def test_fine_tune_starts_from_base_and_freezes(tiny_networks, sim_file, tmp_path):
    base = load_network("finder", tiny_networks["finder"]).model
    # a snapshot (get_weights copies): the comparison must not depend on `base` staying unchanged
    base_weights = {layer.name: layer.get_weights() for layer in base.layers}
    out = tmp_path / "tuned.keras"
    card = fine_tune("finder", sim_file, out, base=tiny_networks["finder"], epochs=1,
                     freeze=["find_enc"], batch_size=8, verbose=0)
    tuned = load_network("finder", out).model
    assert card["recipe"]["base"] == str(tiny_networks["finder"])
    for name, before in base_weights.items():
        after = tuned.get_layer(name).get_weights()
        changed = any(not np.array_equal(a, b) for a, b in zip(before, after))
        if name.startswith("find_enc"):
            assert not changed, name
    assert any(not np.array_equal(a, b) for a, b in
               zip(base_weights["heatmap"], tuned.get_layer("heatmap").get_weights()))
    # the cached base network (shared by every finder in the process) is untouched
    cached = load_network("finder", tiny_networks["finder"])
    assert cached.model is base
    for layer in base.layers:
        assert all(np.array_equal(a, b) for a, b in zip(base_weights[layer.name], layer.get_weights()))
        assert layer.trainable, layer.name
    assert json.loads(out.with_suffix(".json").read_text())["sha256"] == card["sha256"]


def test_random_holes_hide_counts_but_not_the_loss(sim_file):
    """Holes are cut from the input mask only: the label still asks for the background there."""
    rng = np.random.default_rng(3)
    full = np.ones((40, 200, 200), bool)
    holed = with_random_holes(full, rng, fraction=1.0)
    lost = 1 - holed.mean(axis=(1, 2))
    assert np.all(lost > 0) and np.all(lost <= 2 / 3)
    assert np.array_equal(with_random_holes(full, rng, fraction=0.0), full)

    with SimulationReader(sim_file) as reader:
        config = TrainingConfig(kind="cleaner", batch_size=4, mask_holes=1.0)
        x, y = MapBatches(reader, config, np.arange(4), augment=True)[0]
    seen, label = x[..., 1] > 0, y[..., 1] > 0
    assert np.all(seen <= label) and np.any(label & ~seen)
    assert np.all(x[..., 0][~seen] == 0)
