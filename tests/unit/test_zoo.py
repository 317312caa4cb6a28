"""``make zoo`` (yolo_devtools.zoo): a model repository built from the official yolov3-tiny and a cfg."""

from __future__ import annotations

import pytest

from predictor import darknet
from predictor.repository import discover
from yolo_devtools import zoo

pytestmark = pytest.mark.unit

CFG = zoo.DATA / "cfg" / "yolov4-tiny.cfg"


def test_cfg_at_size_changes_only_the_net_size():
    text = CFG.read_text()
    out = zoo.cfg_at_size(text, 608)
    changed = [(a, b) for a, b in zip(text.splitlines(), out.splitlines()) if a != b]
    assert changed == [("width=416", "width=608"), ("height=416", "height=608")]
    with pytest.raises(ValueError, match="no width/height"):
        zoo.cfg_at_size("[net]\nchannels=3\n[yolo]\n", 608)


@pytest.mark.model
def test_zoo_is_a_repository_of_three_models_and_is_rebuilt_but_never_overwrites_others(tmp_path, tiny_model_dir):
    dest = tmp_path / "zoo"
    names = zoo.build_zoo(dest, tiny_model_dir)
    assert names == ["yolov3-tiny", "yolov3-tiny-608", zoo.RANDOM_YOLOV4_TINY]
    repo = discover(dest, "yolov3")
    assert list(repo.models) == names and repo.aliases == {"yolov3": "yolov3-tiny"}
    sizes = {name: darknet.parse_cfg(files.cfg).width for name, files in repo.models.items()}
    assert sizes == {"yolov3-tiny": 416, "yolov3-tiny-608": 608, zoo.RANDOM_YOLOV4_TINY: 416}
    random_model = repo.models[zoo.RANDOM_YOLOV4_TINY]
    darknet.load_weights(darknet.parse_cfg(random_model.cfg), random_model.weights)  # exactly the cfg's size
    assert "RANDOM WEIGHTS" in (dest / zoo.RANDOM_YOLOV4_TINY / "README.txt").read_text()
    assert zoo.build_zoo(dest, tiny_model_dir) == names  # its own zoo: rebuilt
    other = tmp_path / "mine"
    (other / "model").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not made by this command"):
        zoo.build_zoo(other, tiny_model_dir)
    assert (other / "model").is_dir()
