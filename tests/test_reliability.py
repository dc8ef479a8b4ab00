"""Reliability and safety: bad inputs, model files, interruption, determinism, threads.

Every public entry point (CNNBackgroundMaker, CNNSourceFinder, the CLI,
simulation and training) must answer bad input with a clear ValueError or
TypeError naming the problem, never a crash deep in TensorFlow or a silently
wrong result. Model files are loaded in Keras safe mode and checked against
their model card. A killed training resumes from its last checkpoint.
"""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import Table
from astropy.time import Time
from click.testing import CliRunner
from gammapy.data import GTI, EventList, FixedPointingInfo, Observation
from gammapy.datasets import MapDataset
from gammapy.maps import Map, MapAxis, RegionGeom, WcsGeom

from gammapy_cnn import CNNBackgroundMaker, CNNSourceFinder
from gammapy_cnn.cli import cli
from gammapy_cnn.data import counts_dataset
from gammapy_cnn.finders import COLUMNS
from gammapy_cnn.networks import load_network, sha256
from gammapy_cnn.preprocessing import normalise, pad

from .conftest import make_dataset

ENERGY = MapAxis.from_energy_bounds("0.03 TeV", "100 TeV", nbin=3, name="energy")


@pytest.fixture(scope="module")
def tools(tiny_networks):
    """One maker and one finder (threshold 0: every heatmap peak) on the tiny networks."""
    return {
        "maker": CNNBackgroundMaker(network=tiny_networks["cleaner"]),
        "finder": CNNSourceFinder(network=tiny_networks["finder"], background_network=tiny_networks["cleaner"],
                                  threshold=0.0, max_candidates=5),
    }


def _dataset(npix=(120, 100), binsz=0.025, axes=(ENERGY,), rate=0.2, seed=0, unit="", **kwargs):
    geom = WcsGeom.create(skydir=(83.6, 22.0), npix=npix, binsz=binsz, frame="icrs", proj="TAN",
                          axes=list(axes))
    counts = np.random.default_rng(seed).poisson(rate, geom.data_shape).astype(float)
    return MapDataset(counts=Map.from_geom(geom, data=counts, unit=unit), name="bad", **kwargs)


def _run(tools, which, dataset):
    return tools[which].run(dataset)


BOTH = pytest.mark.parametrize("which", ["maker", "finder"])


# --- bad inputs ---------------------------------------------------------------


@BOTH
def test_not_a_dataset(tools, which):
    counts = _dataset().counts
    with pytest.raises(TypeError, match="MapDataset, got WcsNDMap"):
        _run(tools, which, counts)


@BOTH
def test_region_geometry(tools, which):
    geom = RegionGeom.create("icrs;circle(83.6, 22.0, 0.5)", axes=[ENERGY])
    with pytest.raises(ValueError, match="RegionGeom; the CNN needs a WCS"):
        _run(tools, which, MapDataset(counts=Map.from_geom(geom), name="bad"))


@BOTH
def test_healpix_geometry(tools, which):
    pytest.importorskip("healpy", reason="HEALPix maps need healpy, which is not installed")
    from gammapy.maps import HpxGeom

    geom = HpxGeom.create(nside=64, frame="icrs", region="DISK(83.6,22.0,3)")
    with pytest.raises(ValueError, match="HpxGeom; the CNN needs a WCS"):
        _run(tools, which, MapDataset(counts=Map.from_geom(geom), name="bad"))


@BOTH
def test_dataset_without_counts(tools, which):
    with pytest.raises(ValueError, match="'empty' has no counts"):
        _run(tools, which, MapDataset(name="empty"))


@BOTH
@pytest.mark.parametrize("value, match", [
    (np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-1.0, "negative"), (2.5, "whole numbers"),
])
def test_bad_counts_values(tools, which, value, match):
    dataset = _dataset()
    dataset.counts.data[1, 30, 40] = value
    with pytest.raises(ValueError, match=match):
        _run(tools, which, dataset)


@BOTH
def test_safe_mask_all_false(tools, which):
    dataset = _dataset()
    dataset.mask_safe = Map.from_geom(dataset.counts.geom, data=np.zeros(dataset.counts.data.shape, bool))
    with pytest.raises(ValueError, match="safe mask is False everywhere"):
        _run(tools, which, dataset)


@BOTH
@pytest.mark.parametrize("npix, binsz, match", [
    ((10, 10), 0.025, "too small"),  # 0.25 deg: a few PSF widths, the network sees nothing
    ((40, 200), 0.01, "too small"),  # 0.4 deg on one side only
    ((50, 50), 0.3, "larger than 0.2 deg"),  # the PSF is not resolved
    ((100, 100), (0.02, 0.03), "pixels must be square"),
    ((4100, 4100), 0.025, "too large"),
])
def test_bad_geometry(tools, which, npix, binsz, match):
    geom = WcsGeom.create(skydir=(83.6, 22.0), npix=npix, binsz=binsz, frame="icrs")
    dataset = MapDataset(counts=Map.from_geom(geom, dtype=np.uint8), name="bad")
    with pytest.raises(ValueError, match=match):
        _run(tools, which, dataset)


@BOTH
def test_allsky_refused(tools, which):
    geom = WcsGeom.create(skydir=(0, 0), binsz=0.5, width=(360, 180), proj="CAR", frame="galactic")
    with pytest.raises(ValueError, match="too large"):
        _run(tools, which, MapDataset(counts=Map.from_geom(geom, data=np.zeros(geom.data_shape)),
                                      name="bad"))


@BOTH
@pytest.mark.parametrize("unit", ["cm-2 s-1", "s", "TeV"])
def test_counts_with_units_refused(tools, which, unit):
    with pytest.raises(ValueError, match="counts must be dimensionless.*got unit"):
        _run(tools, which, _dataset(unit=unit))


@BOTH
def test_counts_unit_ct_accepted(tools, which):
    _run(tools, which, _dataset(unit="ct"))


@BOTH
def test_energy_outside_training_range_warns(tools, which):
    far = MapAxis.from_energy_bounds("200 TeV", "1000 TeV", nbin=2, name="energy")
    with pytest.warns(UserWarning, match="does not overlap the 0.03 TeV - 100 TeV"):
        out = _run(tools, which, _dataset(axes=[far]))
    assert out is not None  # a warning, not an error: the result is still returned
    # the same range in GeV, or one that partly overlaps: no warning
    for axis in (MapAxis.from_energy_bounds("30 GeV", "1e5 GeV", nbin=3, name="energy"),
                 MapAxis.from_energy_bounds("50 TeV", "300 TeV", nbin=2, name="energy")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _run(tools, which, _dataset(axes=[axis]))
        assert not [w for w in caught if "overlap" in str(w.message)]


def test_estimate_image_bad_arrays(tools):
    maker = tools["maker"]
    good = np.ones((2, 64, 64))
    for counts, mask, match in [
        (good[0], good[0] > 0, r"\(n, ny, nx\)"),
        (good, np.ones((2, 64, 32), bool), r"\(n, ny, nx\)"),
        (np.ones((1, 16, 64)), np.ones((1, 16, 64), bool), "too small"),
        (-good, good > 0, "non-negative"),
        (good * np.nan, good > 0, "finite"),
    ]:
        with pytest.raises(ValueError, match=match):
            maker.estimate_image(counts, mask)


# --- valid edge cases -------------------------------------------------------------


def _empty_observation():
    t_ref = Time("2025-01-01T00:00:00", scale="tt")
    table = Table({"RA": [] * u.deg, "DEC": [] * u.deg, "ENERGY": [] * u.TeV})
    table["TIME"] = t_ref + [] * u.s
    table.meta["MJDREFI"], table.meta["MJDREFF"], table.meta["TIMESYS"] = 60675, 0.0008007407, "tt"
    return Observation(obs_id=5, events=EventList(table),
                       gti=GTI.create([0] * u.s, [100] * u.s, reference_time=t_ref),
                       pointing=FixedPointingInfo(fixed_icrs=SkyCoord(83.6, 22.0, unit="deg")))


def test_empty_event_list_gives_empty_table_and_flat_background(tools):
    dataset = counts_dataset(_empty_observation())
    assert dataset.counts.data.sum() == 0
    table = tools["finder"].run(dataset)  # threshold 0: even so, no counts means no candidate
    assert len(table) == 0 and table.colnames == list(COLUMNS)
    assert table["RA"].unit == u.deg
    bkg = tools["maker"].run(dataset).background.data.sum(axis=0)
    inside = dataset.mask_safe.data.any(axis=0)
    assert np.all(bkg[~inside] == 0)
    np.testing.assert_allclose(bkg[inside], bkg[inside][0], rtol=1e-9)  # flat
    assert 0 < bkg.sum() < 1  # the half-count prior, nothing more


@BOTH
def test_non_square_map(tools, which):
    dataset = _dataset(npix=(260, 70), rate=0.5)
    out = _run(tools, which, dataset)
    if which == "maker":
        assert out.background.geom == dataset.counts.geom
        assert np.all(np.isfinite(out.background.data)) and np.all(out.background.data >= 0)
    else:
        assert len(out) >= 1  # threshold 0
        assert np.all((out["x"] >= 0) & (out["x"] <= 259) & (out["y"] >= 0) & (out["y"] <= 69))


# --- large maps: tiles ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cleaner", "finder"])
def test_tiled_inference_equals_one_call(tiny_networks, kind):
    counts = np.random.default_rng(1).poisson(0.3, (1, 400, 300)).astype(float)
    x, _ = pad(normalise(counts, np.ones(counts.shape, bool))[0])  # 416 x 320
    # a copy: the loaded network is cached and shared with the other tests
    network = copy.copy(load_network(kind, tiny_networks[kind]))
    whole = network.predict(x)
    network.tile_size = 160  # 3 x 2 tiles instead of one call
    tiled = network.predict(x)
    for key in (["heatmap", "offset"] if kind == "finder" else [None]):
        a, b = (whole, tiled) if key is None else (whole[key], tiled[key])
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6 * np.abs(a).max())
    # the overlap matters: too narrow a margin changes the result at the seams
    network.tile_margin = 32
    narrow = network.predict(x)
    a, b = (whole, narrow) if kind == "cleaner" else (whole["heatmap"], narrow["heatmap"])
    assert np.abs(b - a).max() > 1e-4 * np.abs(a).max()


def test_networks_run_together_give_their_own_outputs(tiny_networks):
    """One graph call of the cleaner and the finder network (the finder's single-map path)
    gives what each gives alone, to the last bit, in one call and in tiles."""
    counts = np.random.default_rng(2).poisson(0.5, (2, 200, 150)).astype(float)
    x, _ = pad(normalise(counts, np.ones(counts.shape, bool))[0])
    cleaner = copy.copy(load_network("cleaner", tiny_networks["cleaner"]))
    finder = load_network("finder", tiny_networks["finder"])
    for tile_size, tile_margin in ((cleaner.tile_size, cleaner.tile_margin), (64, 32)):
        cleaner.tile_size, cleaner.tile_margin = tile_size, tile_margin  # then 4 x 3 tiles
        together = cleaner.predict(x, together_with=[finder])
        assert len(together) == 2
        np.testing.assert_array_equal(together[0], cleaner.predict(x))
        alone = finder.predict(x)
        for key in ("heatmap", "offset"):
            np.testing.assert_array_equal(together[1][key], alone[key])


def test_single_maps_run_through_litert_as_through_tensorflow(tiny_networks):
    """One map goes through LiteRT: TensorFlow's result to float32 rounding, the same at every
    call and from four threads at once; a batch, and `use_litert` off, go through TensorFlow."""
    import concurrent.futures

    counts = np.random.default_rng(3).poisson(0.5, (3, 200, 150)).astype(float)
    x, _ = pad(normalise(counts, np.ones(counts.shape, bool))[0])
    for kind in ("cleaner", "finder"):
        network = copy.copy(load_network(kind, tiny_networks[kind]))
        network._lite = {}  # a copy's own interpreters
        assert network._lite_runner(x[:1]) is not None and network._lite_runner(x) is None
        lite = network.predict(x[:1])
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            again = list(pool.map(lambda _: network.predict(x[:1]), range(8)))
        batch = network.predict(x)
        network.use_litert = False
        alone = network.predict(x[:1])
        for key in (["heatmap", "offset"] if kind == "finder" else [None]):
            pick = (lambda out: out) if key is None else (lambda out: out[key])
            np.testing.assert_allclose(pick(lite), pick(alone), rtol=0, atol=1e-5 * np.abs(pick(alone)).max())
            for out in again:
                np.testing.assert_array_equal(pick(out), pick(lite))
            # TensorFlow's both: bit for bit on some CPUs, to float32 rounding where oneDNN picks
            # other kernels for a batch of 3 than for one map (AMD EPYC: 6e-8 on values of 0.94)
            np.testing.assert_allclose(pick(batch)[:1], pick(alone), rtol=1e-6, atol=1e-7)


def test_without_litert_single_maps_run_through_tensorflow(tiny_networks, monkeypatch):
    """Where ai-edge-litert is not installed (Windows), a single map goes through TensorFlow."""
    counts = np.random.default_rng(4).poisson(0.5, (1, 120, 100)).astype(float)
    x, _ = pad(normalise(counts, np.ones(counts.shape, bool))[0])
    network = copy.copy(load_network("finder", tiny_networks["finder"]))
    network._lite = {}
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    assert network._lite_runner(x) is None
    out = network.predict(x)
    network.use_litert = False
    for key in ("heatmap", "offset"):
        np.testing.assert_array_equal(out[key], network.predict(x)[key])


def test_large_map_runs_in_tiles(tools):
    # 0.05 deg pixels: 1600 x 1500 native pixels, above one tile (1408)
    dataset = _dataset(npix=(800, 750), binsz=0.05, axes=(), rate=0.3)
    out = tools["maker"].run(dataset)
    assert out.background.geom == dataset.counts.geom
    bkg = out.background.data
    assert np.all(np.isfinite(bkg)) and np.all(bkg >= 0)
    assert 0.5 < bkg.sum() / dataset.counts.data.sum() < 2
    table = tools["finder"].run(dataset)
    assert table.colnames == list(COLUMNS)


# --- model files ---------------------------------------------------------------------


def _copy(src, folder, name):
    dst = Path(folder) / f"{name}.keras"
    shutil.copy(src, dst)
    shutil.copy(Path(src).with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def _edit_card(path, **changes):
    card_path = Path(path).with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.update(changes)
    card_path.write_text(json.dumps(card))


def _refused(kind, path, reason, error=ValueError, named=None):
    with pytest.raises(error) as info:
        load_network(kind, path)
    message = str(info.value)
    assert str(named or path) in message and reason in message, message


def test_lambda_layer_refused(tiny_networks, tmp_path):
    from gammapy_cnn.networks import quiet_tensorflow

    keras = quiet_tensorflow()
    inp = keras.Input((None, None, 3))
    out = keras.layers.Lambda(lambda t: keras.ops.exp(t[..., :1]))(keras.layers.Conv2D(3, 1)(inp))
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    shutil.copy(Path(tiny_networks["cleaner"]).with_suffix(".json"), path.with_suffix(".json"))
    _edit_card(path, sha256=sha256(path))  # a valid card: only safe mode stands in the way
    _refused("cleaner", path, "Lambda")


def test_corrupted_and_truncated_files(tiny_networks, tmp_path):
    data = Path(tiny_networks["cleaner"]).read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    for name, content in (("corrupted", bytes(flipped)), ("truncated", data[: len(data) // 2]),
                          ("zeros", bytes(len(data)))):
        path = _copy(tiny_networks["cleaner"], tmp_path, name)
        path.write_bytes(content)
        _refused("cleaner", path, "does not match the SHA-256")
        # even with a card re-signed for the damaged file, Keras cannot read it: a clear error
        _edit_card(path, sha256=sha256(path))
        with pytest.raises(ValueError, match="cannot load network file|is not a 'default' cleaner") as info:
            load_network("cleaner", path)
        assert str(path) in str(info.value)


def test_wrong_architecture(tiny_networks, tmp_path):
    path = _copy(tiny_networks["finder"], tmp_path, "finder_as_cleaner")
    _refused("cleaner", path, "is a 'finder' network, not a 'cleaner' one")
    # a finder whose card was replaced by a cleaner's: the structure check catches it
    shutil.copy(Path(tiny_networks["cleaner"]).with_suffix(".json"), path.with_suffix(".json"))
    _edit_card(path, sha256=sha256(path))
    _refused("cleaner", path, "is not a 'default' cleaner network")
    _edit_card(path, architecture="seed")
    _refused("cleaner", path, "does not take the input of a 'original' cleaner")  # 'seed': alias
    _edit_card(path, architecture="unet")
    _refused("cleaner", path, "unknown architecture 'unet'")


@pytest.mark.parametrize("change, reason", [
    ({"preprocessing_version": 0}, "preprocessing version 0"),
    ({"native_binsz_deg": 0.05}, "trained on 0.05 deg pixels"),
    ({"sha256": None}, "does not match the SHA-256"),
])
def test_card_mismatch(tiny_networks, tmp_path, change, reason):
    path = _copy(tiny_networks["cleaner"], tmp_path, "changed")
    _edit_card(path, **change)
    _refused("cleaner", path, reason)


def test_missing_or_broken_card_and_bad_paths(tiny_networks, tmp_path):
    path = _copy(tiny_networks["cleaner"], tmp_path, "nocard")
    path.with_suffix(".json").unlink()
    _refused("cleaner", path, "has no model card nocard.json")
    path = _copy(tiny_networks["cleaner"], tmp_path, "badjson")
    path.with_suffix(".json").write_text("{not json")
    _refused("cleaner", path, "is not valid JSON", named=path.with_suffix(".json"))
    other = tmp_path / "model.h5"
    other.write_bytes(b"\x89HDF")
    _refused("cleaner", other, "must be a .keras file")
    _refused("cleaner", tmp_path / "absent.keras", "does not exist", FileNotFoundError)
    # the maker reports the error when the network is first needed, not later in TensorFlow
    with pytest.raises(ValueError, match="no model card"):
        CNNBackgroundMaker(network=tmp_path / "nocard.keras").run(_dataset())


def test_loaded_network_is_usable(tiny_networks, tmp_path):
    path = _copy(tiny_networks["finder"], tmp_path, "good")
    assert load_network("finder", path).architecture == "default"


# --- interrupted training -----------------------------------------------------------------


@pytest.mark.slow
def test_killed_training_resumes_from_checkpoint(sim_file, tmp_path, caplog):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("kind: cleaner\nwidths: [4, 4, 4, 4]\nepochs: 50\nbatch_size: 8\n"
                      "steps_per_epoch: 4\nvalidation_fraction: 0.15\nseed: 1\n")
    output = tmp_path / "cleaner.keras"
    state = Path(str(output) + ".ckpt") / "state.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from gammapy_cnn.cli import main; main()", "train", "cleaner",
         "--data", str(sim_file), "--output", str(output), "--config", str(recipe)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )
    try:
        deadline = time.time() + 240
        done = 0
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            if state.exists():
                done = json.loads(state.read_text())["epoch"]
                if done >= 1:
                    break
        assert proc.poll() is None, "training ended before it could be killed:\n" + proc.stdout.read()
        proc.send_signal(signal.SIGKILL)
        log = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # nothing under the final names; the checkpoint is whole
    assert not output.exists() and not output.with_suffix(".json").exists()
    killed = json.loads(state.read_text())
    started = log.count("Epoch ")
    assert 1 <= killed["epoch"] and started - killed["epoch"] <= 1, log  # at most one epoch lost

    caplog.set_level("INFO", logger="gammapy_cnn")
    epochs = killed["epoch"] + 2
    result = CliRunner().invoke(cli, ["train", "cleaner", "--data", str(sim_file), "--output",
                                      str(output), "--config", str(recipe), "--epochs", str(epochs),
                                      "--resume"])
    assert result.exit_code == 0, result.output
    assert f"resuming from epoch {killed['epoch']}" in caplog.text
    card = json.loads(output.with_suffix(".json").read_text())
    assert len(card["history"]) == epochs
    assert card["history"][: killed["epoch"]] == killed["history"]  # continued, not restarted
    assert card["sha256"] == sha256(output)
    assert load_network("cleaner", output).architecture == "default"


# --- bad inputs at the CLI, simulation and training -------------------------------------


def test_cli_bad_inputs(sim_file, tmp_path):
    runner = CliRunner()
    bad_recipe = tmp_path / "bad.yaml"
    bad_recipe.write_text("kind: cleaner\nepochs: 0\n")
    not_sim = tmp_path / "not_sim.h5"
    not_sim.write_text("hello")
    cases = [
        (["simulate", "--n", "0", "--output", str(tmp_path / "a.h5")], ValueError,
         "n must be a positive number of maps"),
        (["simulate", "--n", "4", "--output", str(tmp_path / "a.h5"), "--irf", "nope"],
         FileNotFoundError, "IRF 'nope' is neither a built-in name"),
        (["simulate", "--n", "4", "--output", str(tmp_path / "a.h5"), "--scenario", "nope"],
         ValueError, "nope"),
        (["train", "cleaner", "--data", str(not_sim), "--output", str(tmp_path / "o.keras")],
         ValueError, "is not a readable HDF5 file"),
        (["train", "cleaner", "--data", str(sim_file), "--output", str(tmp_path / "o.h5")],
         ValueError, "must end in .keras"),
        (["train", "cleaner", "--data", str(sim_file), "--output", str(tmp_path / "o.keras"),
          "--config", str(bad_recipe)], ValueError, "epochs"),
    ]
    for args, error, match in cases:
        result = runner.invoke(cli, args)
        assert isinstance(result.exception, error), (args, result.exception)
        assert match in str(result.exception), (args, str(result.exception))
    # a recipe of the other kind is a usage error (exit code 2) with a message
    recipe = tmp_path / "finder.yaml"
    recipe.write_text("kind: finder\n")
    result = runner.invoke(cli, ["train", "cleaner", "--data", str(sim_file), "--output",
                                 str(tmp_path / "o.keras"), "--config", str(recipe)])
    assert result.exit_code == 2 and "trains a finder, not a cleaner" in result.output
    assert not (tmp_path / "o.keras").exists()


def test_cli_entry_point_prints_error_not_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "from gammapy_cnn.cli import main; main()", "simulate", "--n", "-3",
         "--output", str(tmp_path / "a.h5")], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Error: n must be a positive number of maps, got -3" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_simulation_and_training_bad_inputs(sim_file, tmp_path):
    from gammapy_cnn.simulation import SimulationTemplate
    from gammapy_cnn.simulation.batch import simulate_file
    from gammapy_cnn.training import TrainingConfig, train

    not_fits = tmp_path / "irf.fits"
    not_fits.write_text("not a FITS file")
    with pytest.raises(ValueError, match=f"IRF file {not_fits} is not a readable GADF IRF file"):
        SimulationTemplate(not_fits)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        simulate_file(tmp_path / "x.h5", 3, chunk_size=0, progress=False)
    for field, value in [("epochs", 0), ("batch_size", -1), ("steps_per_epoch", 0),
                         ("validation_fraction", 1.0), ("learning_rate", 0.0)]:
        with pytest.raises(ValueError, match=field):
            TrainingConfig(kind="cleaner", **{field: value})
    with pytest.raises(ValueError, match="too few for batches of 64"):
        train(TrainingConfig(kind="cleaner", batch_size=64), tmp_path / "o.keras", data=sim_file)
    with pytest.raises(ValueError, match="no training data"):
        train(TrainingConfig(kind="cleaner"), tmp_path / "o.keras")


# --- determinism ---------------------------------------------------------------------------


def test_training_is_reproducible(tiny_networks, sim_file, tmp_path):
    """The same recipe and seed give the same weights, to 1e-5 of each tensor's largest value.

    With oneDNN off (the package's default) CPU training is in practice bit for
    bit reproducible; the tolerance leaves room for a different CPU's
    instruction set, not for a different random stream.
    """
    from gammapy_cnn.networks import quiet_tensorflow
    from gammapy_cnn.training import TrainingConfig, train
    from gammapy_cnn.training.core import _build

    card = load_network("cleaner", tiny_networks["cleaner"]).card
    config = TrainingConfig(**card["recipe"])
    train(config, tmp_path / "again.keras", data=sim_file, verbose=0)
    first = load_network("cleaner", tiny_networks["cleaner"]).model.get_weights()
    second = load_network("cleaner", tmp_path / "again.keras").model.get_weights()
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * max(np.abs(a).max(), 1e-12))
    # training moved the weights well beyond that tolerance: the comparison can fail
    quiet_tensorflow().utils.set_random_seed(config.seed)
    initial = _build(config).get_weights()
    assert max(np.abs(a - c).max() / np.abs(a).max() for a, c in zip(first, initial)) > 1e-3


def test_inference_is_deterministic(template, tiny_networks, tools):
    dataset, _ = make_dataset(template, sources=[(0.5, 0.2, 2.0)], livetime=300)
    fresh_maker = CNNBackgroundMaker(network=tiny_networks["cleaner"])
    a = tools["maker"].run(dataset).background.data
    b = tools["maker"].run(dataset).background.data
    c = fresh_maker.run(dataset).background.data
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    fresh_finder = CNNSourceFinder(network=tiny_networks["finder"], background_network=tiny_networks["cleaner"],
                                   threshold=0.0, max_candidates=5)
    tables = [tools["finder"].run(dataset), fresh_finder.run(dataset)]
    assert len(tables[0]) >= 1
    for table in tables[1:]:
        assert table.colnames == tables[0].colnames
        for name in table.colnames:
            np.testing.assert_array_equal(table[name], tables[0][name])


# --- threads ---------------------------------------------------------------------------------


def test_one_finder_from_four_threads(template, tiny_networks):
    datasets = [make_dataset(template, sources=[(0.3 * i, -0.2, 1.5)], livetime=200, seed=i)[0]
                for i in range(4)]

    def finder():
        return CNNSourceFinder(network=tiny_networks["finder"], background_network=tiny_networks["cleaner"],
                               threshold=0.0, max_candidates=5)

    serial_finder = finder()
    serial = [serial_finder.run(d) for d in datasets]
    shared = finder()  # not loaded yet: the threads race to load its networks
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(shared.run, datasets))
    for i, table in enumerate(parallel):
        expected = serial[i % 4]
        assert len(table) == len(expected)
        for name in table.colnames:
            np.testing.assert_array_equal(table[name], expected[name])
    # the maker alone, from threads, agrees too
    maker = CNNBackgroundMaker(network=tiny_networks["cleaner"])
    with ThreadPoolExecutor(4) as pool:
        backgrounds = list(pool.map(lambda d: maker.run(d).background.data, datasets))
    for d, bkg in zip(datasets, backgrounds):
        np.testing.assert_array_equal(bkg, serial_finder.background_maker.run(d).background.data)
