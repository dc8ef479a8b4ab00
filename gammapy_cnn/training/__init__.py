"""Training and fine-tuning of the networks, streaming from simulation files.

A training run is described by a `TrainingConfig` (YAML, see
``gammapy_cnn/networks/recipes/``). Batches are read from the HDF5 file on
the fly (`MapBatches`), so memory does not grow with the file. Every epoch
writes a full checkpoint (weights and optimizer state) beside the output;
``resume=True`` continues from it. The final ``.keras`` file holds no
optimizer state and gets a model card (``.json``) with the recipe, the data,
the metrics and its SHA-256. `calibrate_finder` then adds the finder's score
calibration to its card.

Modules: ``config`` (recipes), ``losses``, ``targets`` (the finder's labels),
``batches`` (streaming and augmentation), ``core`` (training runs and cards)
and ``calibration``.
"""

from .batches import MapBatches, with_random_holes
from .calibration import calibrate_finder, point_source_width
from .config import TrainingConfig, recipe_path
from .core import fine_tune, train, write_card
from .losses import background_loss, heatmap_focal_loss, offset_loss
from .targets import finder_targets, source_radius, source_significance

__all__ = [
    "TrainingConfig",
    "recipe_path",
    "MapBatches",
    "with_random_holes",
    "train",
    "fine_tune",
    "write_card",
    "calibrate_finder",
    "point_source_width",
    "background_loss",
    "heatmap_focal_loss",
    "offset_loss",
    "source_radius",
    "source_significance",
    "finder_targets",
]
