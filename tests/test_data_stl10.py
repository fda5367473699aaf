"""STL-10 binaries: the official layout (column-major planes), MD5 checks, clear errors."""

import numpy as np
import pytest

from atml.data import stl10
from atml.errors import DataError


def test_generated_files_round_trip(tmp_path):
    folder = stl10.write_binaries(tmp_path, n_train=20, n_test=30, seed=3)
    data = stl10.load_generated(tmp_path)
    assert data.train.images.shape == (20, 3, 96, 96) and data.val.images.shape == (30, 3, 96, 96)
    assert data.train.labels.tolist() == [i % 10 for i in range(20)] and data.train.classes[7] == "monkey"
    assert (folder / "class_names.txt").read_text().split() == stl10.CLASSES


def test_planes_are_read_column_major_like_the_official_files(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    image = np.zeros((3, 96, 96), dtype=np.uint8)
    image[0, 10, :] = 255  # a horizontal red line on row 10
    # The official files store each plane column by column, i.e. the transpose of (H, W).
    image.transpose(0, 2, 1)[None].tofile(folder / "test_X.bin")
    np.array([3], dtype=np.uint8).tofile(folder / "test_y.bin")
    images, labels = stl10._read_split(folder, "test")
    assert labels.tolist() == [2]
    assert images[0, 0, 10].min() == 255 and images[0, 0, :, 10].sum() == 255  # a row, not a column


def test_production_path_checks_the_official_md5s(tmp_path):
    stl10.write_binaries(tmp_path, n_train=10, n_test=10)
    with pytest.raises(DataError, match=r"train_X.bin is corrupt.*expected 918c2871b30a85fa023e0c44e0bee87f"):
        stl10.load(tmp_path, offline=True)
    with pytest.raises(DataError, match=r"train_X.bin is missing.*stl10_binary.tar.gz"):
        stl10.load(tmp_path / "elsewhere", offline=True)


def test_files_that_do_not_belong_together(tmp_path):
    folder = stl10.write_binaries(tmp_path, n_train=10, n_test=10)
    np.zeros(3, dtype=np.uint8).tofile(folder / "test_y.bin")  # 3 labels for 10 images
    with pytest.raises(DataError, match="do not belong together"):
        stl10._read_split(folder, "test")
