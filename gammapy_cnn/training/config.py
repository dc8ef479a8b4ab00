"""Training recipes: `TrainingConfig` and the shipped recipe files."""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError, field_validator

from ..networks import canonical_name

__all__ = ["TrainingConfig", "recipe_path"]


class TrainingConfig(BaseModel):
    """A training recipe.

    ``kind`` and ``architecture`` choose the network (``architecture: seed``,
    the former name of ``original``, is read as ``original``); ``base`` starts
    from an existing network (fine-tuning) and ``freeze`` keeps layers whose
    names start with one of the given prefixes fixed.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["cleaner", "finder"]
    architecture: Literal["default", "original"] = "default"
    data: str | None = None
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 32
    steps_per_epoch: PositiveInt | None = None
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    learning_rate: PositiveFloat = 2e-3
    seed: int = 0
    augment: bool = True
    base: str | None = None
    freeze: list[str] = []
    cleaner: str = "original"  # original regressor only: the cleaner whose output it reads
    widths: list[int] | None = None
    #: Cleaner only: the fraction of training maps whose input has random
    #: masked holes (`with_random_holes`), while the loss still covers them.
    mask_holes: float = Field(0.0, ge=0, le=1)
    #: ``mirrored``: data-parallel over the local GPUs (or CPU) with
    #: ``tf.distribute.MirroredStrategy``; ``multi-worker``: over several
    #: machines with ``MultiWorkerMirroredStrategy`` (set ``TF_CONFIG`` on each).
    distribute: Literal["none", "mirrored", "multi-worker"] = "none"

    @field_validator("architecture", mode="before")
    @classmethod
    def _former_names(cls, value):
        return canonical_name(value) if isinstance(value, str) else value

    @classmethod
    def read(cls, path):
        data = yaml.safe_load(Path(path).read_text()) or {}
        try:
            return cls(**data)
        except ValidationError as error:
            raise ValueError(f"invalid training config {path}: {error}") from None


def recipe_path(kind, architecture="default"):
    """Path of the shipped recipe of a network (``"seed"`` is read as ``"original"``)."""
    from importlib import resources

    name = f"{kind}_{canonical_name(architecture)}.yaml"
    return Path(str(resources.files("gammapy_cnn.networks") / "recipes" / name))
