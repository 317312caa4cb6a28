"""Model fetch: archives (tar.gz, zip, nested), single files, checksum and path-escape refusals."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import pytest

from predictor import fetch
from predictor.fetch import FetchError

pytestmark = pytest.mark.unit

FILES = {"net.cfg": b"[net]\n", "net.weights": b"\0" * 64, "coco.names": b"dog\n"}


def make_tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_tar_gz_with_nested_folder(tmp_path):
    archive = make_tar(tmp_path / "model.tar.gz", {f"yolov3/1/{k}": v for k, v in FILES.items()} | {"README": b"x"})
    dest = tmp_path / "out"
    fetch.fetch_sources([str(archive)], dest)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == FILES


def test_zip_and_single_files_and_checksum(tmp_path):
    z = tmp_path / "m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for k, v in FILES.items():
            zf.writestr(f"m/{k}", v)
    sha = hashlib.sha256(FILES["net.weights"]).hexdigest()
    fetch.fetch_sources([str(z)], tmp_path / "a", expect_sha256=sha)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(FILES)
    for k, v in FILES.items():
        (tmp_path / k).write_bytes(v)
    fetch.fetch_sources([str(tmp_path / k) for k in FILES], tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(FILES)
    with pytest.raises(FetchError, match="checksum"):
        fetch.fetch_sources([str(z)], tmp_path / "c", expect_sha256="0" * 64)


@pytest.mark.parametrize("bad", ["../evil.cfg", "/etc/evil.cfg", "a/../../evil.weights"])
def test_archive_members_cannot_escape(tmp_path, bad):
    archive = make_tar(tmp_path / "evil.tar.gz", {bad: b"x"})
    with pytest.raises(FetchError, match="escapes"):
        fetch.fetch_sources([str(archive)], tmp_path / "out")
    assert not (tmp_path / "evil.cfg").exists()


def test_missing_source_and_empty_archive(tmp_path):
    with pytest.raises(FetchError, match="no such file"):
        fetch.fetch_sources([str(tmp_path / "nope.tar.gz")], tmp_path / "out")
    with pytest.raises(FetchError, match="no .cfg/.weights/.names"):
        fetch.fetch_sources([str(make_tar(tmp_path / "e.tar.gz", {"readme.txt": b"x"}))], tmp_path / "out")


def test_tiny_is_intact_checks_size_and_hash(tmp_path):
    for k, v in FILES.items():
        (tmp_path / k.replace("net", "yolov3-tiny")).write_bytes(v)
    assert not fetch.tiny_is_intact(tmp_path)
