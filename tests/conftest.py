"""Shared fixtures: a private atml cache, generated datasets, fast smoke configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from atml.data import cifar10


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets a shared-per-session atml cache, torch hub dir and Hugging Face cache, never the user's."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("ATML_CACHE", str(root / "atml-cache"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch-home"))
    # mlflow.set_tracking_uri() also sets MLFLOW_TRACKING_URI, which sweeps started as subprocesses inherit: set then
    # removed here, so that whatever a test sets is undone after it (and a user's own server is never written to)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root / "hf-cache"))  # read per call
    torch.hub.set_dir(str(root / "torch-home" / "hub"))
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    """Small CIFAR-10-format batches with a generated-data manifest."""
    return cifar10.write_batches(tmp_path / "data", n_train=60, n_test=30, seed=1)


@pytest.fixture
def plant_hub_file():
    """Put a file into this test's Hugging Face cache in the hub's own layout (blobs/<sha256>, a snapshot link)."""
    import shutil

    import huggingface_hub.constants

    from atml.storage import sha256sum

    def plant(repo: str, filename: str, source: Path) -> Path:
        root = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
        digest, commit = sha256sum(source), "0" * 40
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text(commit)
        shutil.copyfile(source, root / "blobs" / digest)
        link = root / "snapshots" / commit / filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(Path("../../blobs") / digest)
        return root / "blobs" / digest

    return plant
