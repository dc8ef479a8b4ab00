"""Small helpers shared by the package and its benchmark scripts."""

import os
import platform
import subprocess
import tempfile
from pathlib import Path

__all__ = ["write_text_atomic", "cpu_model"]


def write_text_atomic(path, text):
    """Write ``text`` to a temporary file beside ``path``, then rename it onto ``path``.

    A crash never leaves a half-written file under the final name.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as stream:
            stream.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes private files; outputs are ordinary ones
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cpu_model():
    """CPU model name (from ``lscpu``), for benchmark records."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
