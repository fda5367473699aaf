import gzip

import pytest
import torch

from atml.data import fashion_mnist
from atml.errors import DataError


@pytest.fixture
def fmnist_root(tmp_path):
    fashion_mnist.write_idx(tmp_path, n_train=40, n_test=20, seed=2)
    return tmp_path


def test_generated_idx_files_read_back(fmnist_root):
    data = fashion_mnist.load_generated(fmnist_root)
    assert data.train.images.shape == (40, 1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.val.labels.shape == (20,) and data.train.classes[0] == "T-shirt/top"


def test_production_path_checks_official_md5s(fmnist_root):
    with pytest.raises(DataError) as err:
        fashion_mnist.load(fmnist_root, offline=True)
    name = "train-images-idx3-ubyte.gz"
    assert name in str(err.value) and fashion_mnist.MD5[name] in str(err.value)


def test_missing_files_named_with_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match="is missing.*zalandoresearch"):
        fashion_mnist.load(tmp_path, offline=True)


def test_truncated_and_wrong_kind_of_idx(tmp_path, fmnist_root):
    raw = fmnist_root / "FashionMNIST" / "raw"
    images = raw / "t10k-images-idx3-ubyte.gz"
    data = gzip.decompress(images.read_bytes())
    broken = tmp_path / "short.gz"
    broken.write_bytes(gzip.compress(data[:-10]))
    with pytest.raises(DataError, match="truncated"):
        fashion_mnist.read_idx(broken, fashion_mnist.IMAGES_MAGIC)
    with pytest.raises(DataError, match="magic 2051, expected 2049"):
        fashion_mnist.read_idx(images, fashion_mnist.LABELS_MAGIC)
