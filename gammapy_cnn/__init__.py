"""gammapy-cnn: deep-learning background estimation and source finding for gammapy.

Importing the package registers `CNNBackgroundMaker` (and
`gammapy_cnn.templates.AutoExclusionFoVBackgroundMaker`) in gammapy's
``MAKER_REGISTRY`` and `CNNSourceFinder` in ``ESTIMATOR_REGISTRY``.
TensorFlow is imported only when a network is first used.
"""

__version__ = "0.1.0"

from . import templates  # noqa: E402, F401  (registers its maker)
from .finders import CandidateCatalog, CNNSourceFinder  # noqa: E402
from .makers import CNNBackgroundMaker  # noqa: E402

__all__ = ["CNNBackgroundMaker", "CNNSourceFinder", "CandidateCatalog", "__version__"]
