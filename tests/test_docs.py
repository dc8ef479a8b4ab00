"""The documentation builds with warnings as errors, gallery executed, and matches the code.

The full build runs every gallery example with the shipped networks (a few
minutes); it is skipped, saying why, when Sphinx and its extensions are not
installed (``pip install ".[test]"`` installs them) or when the shipped
networks are absent. The other tests are fast and need neither.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import HESS_DR1

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
EXAMPLES = REPO / "examples"
GALLERY = sorted(EXAMPLES.glob("[0-9][0-9]_*.py"))
# Written by a build into the source tree; never copied into a test build.
GENERATED = ("_build", "_generated", "auto_examples", "api", "sg_execution_times.rst")


def _rst_literals(path):
    """Every ``literal`` of an rst file."""
    return set(re.findall(r"``([^`]+)``", path.read_text()))


def test_scenario_fields_documented():
    from gammapy_cnn.simulation.scenario import Geometry, Scenario

    documented = _rst_literals(DOCS / "user_guide" / "simulation.rst")
    expected = [name for name in Scenario.model_fields if name != "geometry"]
    expected += [f"geometry.{name}" for name in Geometry.model_fields]
    missing = [name for name in expected
               if name not in documented and not any(name in item for item in documented)]
    assert not missing, f"scenario fields missing from docs/user_guide/simulation.rst: {missing}"


def test_training_config_fields_documented():
    from gammapy_cnn.training import TrainingConfig

    documented = _rst_literals(DOCS / "user_guide" / "training.rst")
    missing = [name for name in TrainingConfig.model_fields if name not in documented]
    assert not missing, (
        f"TrainingConfig fields missing from docs/user_guide/training.rst: {missing}")


def test_column_table_comes_from_the_code():
    text = (DOCS / "user_guide" / "source_finding.rst").read_text()
    assert ".. include:: ../_generated/columns.rst" in text
    assert "_columns_table" in (DOCS / "conf.py").read_text()


@pytest.mark.parametrize("path", GALLERY, ids=lambda p: p.name)
def test_gallery_script_format(path):
    """sphinx-gallery format: a docstring with an rst title, then ``# %%`` cells."""
    source = path.read_text()
    tree = ast.parse(source)  # a syntax error fails here
    docstring = ast.get_docstring(tree, clean=False)
    assert docstring, f"{path.name} has no module docstring"
    lines = docstring.strip("\n").splitlines()
    assert len(lines) >= 2 and set(lines[1]) == {"="} and len(lines[1]) >= len(lines[0]), (
        f"{path.name}: the docstring must start with a title underlined with '='"
    )
    assert "\n# %%\n" in source, f"{path.name} has no '# %%' cells"


def test_gallery_is_complete():
    names = [p.name for p in GALLERY]
    assert len(names) >= 5, names
    assert len({name[:2] for name in names}) == len(names), f"duplicate gallery numbers: {names}"


def _missing_docs_tools():
    missing = []
    for module in ("sphinx", "sphinx_gallery", "numpydoc", "pydata_sphinx_theme",
                   "sphinx_automodapi", "myst_parser"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


@pytest.mark.slow
def test_docs_build_with_gallery(tmp_path):
    missing = _missing_docs_tools()
    if missing:
        pytest.skip(f"documentation tools not installed ({', '.join(missing)}): "
                    'pip install ".[test]"')
    from gammapy_cnn.networks import weights_dir

    if not (weights_dir() / "finder_default.keras").is_file():
        pytest.skip("the shipped networks (gammapy_cnn/networks/weights/*_default.keras) are "
                    "absent: the gallery runs them")

    # Build a copy, so the source tree gets none of the generated files.
    src = tmp_path / "src"
    shutil.copytree(DOCS, src / "docs", ignore=shutil.ignore_patterns(*GENERATED))
    shutil.copytree(EXAMPLES, src / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "html"
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("GAMMAPY_CNN_DOCS_NO_GALLERY", None)
    hess = HESS_DR1
    env.pop("GAMMAPY_CNN_SHARED_DATA", None)  # the examples look in $GAMMAPY_DATA, kept as it is
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         str(src / "docs"), str(out)],
        cwd=src, env=env, capture_output=True, text=True, timeout=1200,
    )
    elapsed = time.perf_counter() - start
    log = (proc.stdout + proc.stderr)[-8000:]
    assert proc.returncode == 0, f"sphinx-build -W failed after {elapsed:.0f} s:\n{log}"

    for page in ("index", "getting_started", "design", "results", "api",
                 "user_guide/background", "user_guide/source_finding",
                 "user_guide/simulation", "user_guide/training"):
        assert (out / f"{page}.html").is_file(), f"{page}.html not built"
    assert (out / "api" / "gammapy_cnn.CNNSourceFinder.html").is_file()
    for script in GALLERY:
        html = (out / "auto_examples" / f"{script.stem}.html").read_text()
        # an executed example shows its output; a failing one fails the build above
        outputs = "".join(re.findall(r'class="sphx-glr-script-out.*?</pre>', html, re.DOTALL))
        assert outputs, f"{script.name} was not executed"
        if hess.is_dir():
            assert "Skipping this example" not in outputs, (
                f"{script.name} did not find the H.E.S.S. data at {hess}")
    figures = list((out / "_images").glob("sphx_glr_01_*"))
    assert figures, "the quick-start example made no figure"
    print(f"docs built in {elapsed:.0f} s")
