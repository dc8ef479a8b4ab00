"""gammapy_cnn.utils: the atomic writes."""

import pytest

from gammapy_cnn.utils import atomic_directory, atomic_path, write_text_atomic


def _leftovers(folder, name):
    return [p.name for p in folder.iterdir() if p.name.startswith(f".{name}.")]


def test_atomic_directory_creates_the_folder(tmp_path):
    outdir = tmp_path / "nested" / "results"
    with atomic_directory(outdir) as tmp:
        assert tmp.parent == outdir.parent and not outdir.exists()
        (tmp / "a.txt").write_text("a")
    assert (outdir / "a.txt").read_text() == "a"
    assert _leftovers(outdir.parent, "results") == []


def test_atomic_directory_replaces_files_and_keeps_others(tmp_path):
    outdir = tmp_path / "results"
    outdir.mkdir()
    (outdir / "a.txt").write_text("old")
    (outdir / "keep.txt").write_text("kept")
    with atomic_directory(outdir) as tmp:
        (tmp / "a.txt").write_text("new")
    assert (outdir / "a.txt").read_text() == "new"
    assert (outdir / "keep.txt").read_text() == "kept"
    assert _leftovers(tmp_path, "results") == []


def test_atomic_directory_error_leaves_the_folder_untouched(tmp_path):
    outdir = tmp_path / "results"
    outdir.mkdir()
    (outdir / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(outdir) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash")
    assert (outdir / "a.txt").read_text() == "old"
    assert _leftovers(tmp_path, "results") == []
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "new") as tmp:
        raise RuntimeError("crash")
    assert not (tmp_path / "new").exists()


def test_atomic_path_keeps_the_suffix_and_cleans_up(tmp_path):
    target = tmp_path / "model.keras"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".keras" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    write_text_atomic(target, "done")
    assert target.read_text() == "done" and [p.name for p in tmp_path.iterdir()] == ["model.keras"]
