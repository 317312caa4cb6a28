"""``--model_dir``: one model (directly or one level down) or a model repository; aliases; refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from predictor.darknet import ModelFormatError
from predictor.repository import discover

pytestmark = pytest.mark.unit


def model(d: Path, stem: str = "m", kinds=("cfg", "weights", "names")) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        (d / f"{stem}.{kind}").write_bytes(b"x")
    return d


def test_files_directly_in_the_directory_are_one_model_under_model_name(tmp_path):
    model(tmp_path)
    (tmp_path / "notes").mkdir()
    repo = discover(tmp_path, "yolov3")
    assert list(repo.models) == ["yolov3"] and repo.aliases == {} and repo.names == ("yolov3",)
    assert repo.models["yolov3"].cfg == tmp_path / "m.cfg"


def test_one_model_subdirectory_is_one_model_as_before(tmp_path):
    model(tmp_path / "yolov3-tiny")
    (tmp_path / "empty").mkdir()
    repo = discover(tmp_path, "yolov3")
    assert list(repo.models) == ["yolov3"]
    assert repo.models["yolov3"].weights == tmp_path / "yolov3-tiny" / "m.weights"


def test_several_model_subdirectories_are_a_repository_with_an_alias(tmp_path):
    model(tmp_path / "tiny608")
    model(tmp_path / "tiny")
    model(tmp_path / ".cache")  # hidden: ignored
    (tmp_path / "lost+found").mkdir()  # no model files: ignored
    repo = discover(tmp_path, "yolov3")
    assert list(repo.models) == ["tiny", "tiny608"]
    assert repo.aliases == {"yolov3": "tiny"}  # first in sorted order
    assert repo.names == ("tiny", "tiny608", "yolov3")
    assert discover(tmp_path, "yolov3", default_model="tiny608").aliases == {"yolov3": "tiny608"}
    # the injected name is a model of the repository: no alias
    assert discover(tmp_path, "tiny608").aliases == {} and discover(tmp_path, "tiny608").names == ("tiny", "tiny608")


def test_a_repository_model_may_nest_its_files_one_level_down(tmp_path):
    model(tmp_path / "a" / "unpacked")
    model(tmp_path / "b")
    repo = discover(tmp_path, "yolov3")
    assert repo.models["a"].cfg == tmp_path / "a" / "unpacked" / "m.cfg"


@pytest.mark.parametrize(
    "layout, kwargs, fragment",
    [
        ({"a": ("cfg", "weights", "names"), "b": ("cfg", "names")}, {}, "no .weights file"),
        ({"a": ("cfg", "weights", "names"), "b b": ("cfg", "weights", "names")}, {}, "directory name is its served name"),
        ({"a": ("cfg", "weights", "names"), "b": ("cfg", "weights", "names")}, {"default_model": "c"}, "is not one of a, b"),
        ({"a": ("cfg", "weights", "names")}, {"default_model": "a"}, "--default_model needs a model repository"),
    ],
)
def test_refusals_name_the_problem(tmp_path, layout, kwargs, fragment):
    for name, kinds in layout.items():
        model(tmp_path / name, kinds=kinds)
    with pytest.raises(ModelFormatError, match=fragment):
        discover(tmp_path, "yolov3", **kwargs)


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(ModelFormatError, match="not found"):
        discover(tmp_path / "nope", "yolov3")


def test_fetch_leaves_a_model_repository_as_it_is(tmp_path):
    """`make serve MODEL_DIR=<repository>` runs `python -m predictor.fetch --dest <repository>` first."""
    from predictor import fetch

    model(tmp_path / "a")
    model(tmp_path / "b")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert fetch.main(["--dest", str(tmp_path)]) == 0
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
