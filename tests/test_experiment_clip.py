"""CLIP: weights rules, Procrustes, gap numbers, and the three experiments through the CLI."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from atml import cli
from atml.errors import WeightsError
from atml.models import factory
from atml.suite.clip import align as clip_align
from atml.suite.clip import common as clip_exp
from atml.suite.clip import gap as clip_gap


def test_procrustes_recovers_a_known_rotation_exactly():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    r = clip_align.procrustes(a, a @ q)
    assert np.allclose(r, q, atol=1e-10) and np.allclose(r.T @ r, np.eye(16), atol=1e-10)


def test_gap_numbers_on_known_geometry():
    torch.manual_seed(0)
    text = torch.randn(50, 8)
    same = clip_exp.gap_metrics(text * 3, text)  # same directions, other norms
    assert same["centroid_distance"] == pytest.approx(0, abs=1e-6) and same["paired_cosine"] == pytest.approx(1)
    assert same["image_norm"] == pytest.approx(3 * same["text_norm"])
    unit = torch.nn.functional.normalize(text, dim=1)
    offset = torch.zeros(8)
    offset[0] = 2.0
    shifted = unit + offset  # every image moved by the same vector: a pure gap
    m = clip_exp.gap_metrics(shifted, text)
    assert m["centroid_distance"] > 0.5 and m["gap_variance_share"] > 0
    train_images = torch.nn.functional.normalize(torch.randn(80, 8), dim=1) + offset  # the same gap, other images
    shift = clip_gap.gap_shift(train_images, text)  # fitted on training images and class texts only
    assert torch.allclose(shift, torch.nn.functional.normalize(text, dim=1).mean(0)
                          - torch.nn.functional.normalize(train_images, dim=1).mean(0))
    closed = clip_gap.close_gap(shifted, shift)
    assert clip_exp.gap_metrics(closed, text)["centroid_distance"] < m["centroid_distance"] / 3


def test_no_gap_is_a_defined_case():
    """Identical modalities: no gap direction, so no variance along it (was 0/0 = NaN)."""
    text = torch.randn(30, 8)
    m = clip_exp.gap_metrics(text.clone(), text)
    assert m["centroid_distance"] == 0 and m["gap_variance_share"] == 0.0 and m["paired_cosine"] == pytest.approx(1)


def test_prompt_sets_and_class_ensembles():
    sets = clip_exp.prompt_sets(["cat", "dog"])
    assert len(sets["cifar18"]["cat"]) == 18 and sets["photo"]["dog"] == ["a photo of a dog."]
    assert all(len(p) == 3 for p in sets["descriptive"].values())
    model = factory.create("clip-digits", "random").model
    classes = clip_exp.class_embeddings(model, sets["cifar18"])
    assert classes.shape == (2, 64) and torch.allclose(classes.norm(dim=1), torch.ones(2), atol=1e-5)


def test_openai_weights_offline_never_fall_back_to_random():
    with pytest.raises(WeightsError, match="open_clip_model.safetensors.*offline mode forbids downloading"):
        factory.create("ViT-B-32", "openai", offline=True)


@pytest.mark.slow
def test_vit_b_32_state_dict_file_round_trip_and_mismatch(tmp_path):
    built = factory.create("ViT-B-32", "random", seed=1)
    model, info = built.model, built.info
    assert not info.pretrained
    save_file({k: v.contiguous() for k, v in model.model.state_dict().items()}, tmp_path / "clip.safetensors")
    built = factory.create("ViT-B-32", str(tmp_path / "clip.safetensors"))
    loaded, info = built.model, built.info
    images = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_images(images), model.encode_images(images), atol=1e-5)
        text = loaded.encode_texts(["a photo of a cat.", "a photo of a dog."], normalize=True)
    assert text.shape == (2, 512) and info.sha256
    small = factory.create("clip-digits", "random").model
    save_file(small.model.state_dict(), tmp_path / "small.safetensors")
    with pytest.raises(WeightsError, match="does not fit open_clip ViT-B-32"):
        factory.create("ViT-B-32", str(tmp_path / "small.safetensors"))


def _run(out, *argv):
    assert cli.main(["run", *argv, "--out", str(out)]) == 0
    (run,) = list(out.iterdir())
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "ok"
    for rel in results["figures"]:
        assert (run / rel).stat().st_size > 1000
    return run, results


def test_zeroshot_smoke_saves_prompts_and_per_class_tables(tmp_path):
    run, results = _run(tmp_path, "clip.zeroshot", "--preset", "smoke")
    m = results["metrics"]
    assert m["test_images"] == 60
    per_class = results["tables"][1]
    for i, name in enumerate(("label", "photo", "descriptive", "cifar18"), start=1):
        assert m[f"acc_{name}"] * 60 == pytest.approx(round(m[f"acc_{name}"] * 60))  # a count of the 60 images
        # the generated test split has 6 images per class, so accuracy is the mean of the per-class accuracies
        assert m[f"acc_{name}"] == pytest.approx(sum(row[i] for row in per_class["rows"]) / 10)
    assert len(results["data"]["prompts"]["cifar18"]["monkey"]) == 18
    assert [r[0] for r in results["tables"][1]["rows"]][:2] == ["airplane", "bird"]
    env = json.loads((run / "env.json").read_text())
    assert "generated STL-10" in env["sources"]["data"]["source"]


@pytest.mark.slow
def test_demo_clip_trains_once_and_embeddings_are_reused_across_experiments(tmp_path):
    args = ["--preset", "demo", "--set", "train_epochs=1", "--set", "test_limit=120", "--set", "train_limit=200"]
    run_a, zs = _run(tmp_path / "a", "clip.zeroshot", *args)
    run_b, aligned = _run(tmp_path / "b", "clip.align", *args)
    env_a = json.loads((run_a / "env.json").read_text())["sources"]
    env_b = json.loads((run_b / "env.json").read_text())["sources"]
    assert env_a["weights"]["spec"] == "digits" and env_a["weights"]["sha256"] == env_b["weights"]["sha256"]
    assert env_a["embeddings_test"]["cache_hit"] is False and env_b["embeddings_test"]["cache_hit"] is True
    m = aligned["metrics"]
    assert m["orthogonality_error"] < 1e-8 and m["residual_train"] <= m["residual_train_before"] + 1e-9
    assert m["acc_photo_before"] == pytest.approx(zs["metrics"]["acc_photo"])  # the same embeddings
    assert any("tiny CLIP" in n for n in aligned["notes"])


@pytest.mark.slow
def test_gap_smoke_and_random_init_on_demo(tmp_path):
    _, smoke = _run(tmp_path / "s", "clip.gap", "--preset", "smoke")
    assert "random_init_centroid_distance" not in smoke["metrics"]  # the model is already random
    _, demo = _run(tmp_path / "d", "clip.gap", "--preset", "demo", "--set", "train_epochs=1",
                   "--set", "test_limit=100", "--set", "per_class=4")
    m = demo["metrics"]
    assert m["sample"] == 40 and 0 < m["random_init_centroid_distance"] <= 2
    assert {"figures/modality_gap_embeddings.png", "figures/modality_gap_random_init.png"} <= set(demo["figures"])


def test_weights_folder_and_hugging_face_blob_hash(tmp_path):
    from atml.models import weights
    from atml.storage import sha256sum

    model = factory.create("clip-digits", "random", seed=2).model
    folder = tmp_path / "snapshot"
    folder.mkdir()
    save_file(model.model.state_dict(), folder / "open_clip_model.safetensors")
    built = factory.create("clip-digits", str(folder))
    loaded, info = built.model, built.info
    assert info.file.endswith("open_clip_model.safetensors")
    assert torch.equal(loaded.model.logit_scale, model.model.logit_scale)
    with pytest.raises(WeightsError, match="folder without open_clip_model.safetensors"):
        factory.create("clip-digits", str(tmp_path))
    # The Hugging Face cache keeps large files as blobs/<sha256>, with the snapshot name a link to it.
    blobs = tmp_path / "hub" / "blobs"
    blobs.mkdir(parents=True)
    good = blobs / sha256sum(folder / "open_clip_model.safetensors")
    good.write_bytes((folder / "open_clip_model.safetensors").read_bytes())
    link = tmp_path / "hub" / "open_clip_model.safetensors"
    link.symlink_to(good)
    weights.check_hub_blob(link)  # matches: no error
    good.write_bytes(good.read_bytes()[:-10] + b"0" * 10)  # corrupted in the cache
    with pytest.raises(WeightsError, match="fails its hash check"):
        weights.check_hub_blob(link)


@pytest.mark.slow
def test_the_embedding_cache_keeps_precisions_apart(tmp_path, monkeypatch):
    """bf16 and fp32 embeddings of the same images and weights are different files."""
    from atml import runtime

    run, _ = _run(tmp_path / "a", "clip.zeroshot", "--preset", "smoke")
    first = json.loads((run / "env.json").read_text())["sources"]["embeddings_test"]
    assert first["file"].endswith("-fp32.pt")
    monkeypatch.setattr(runtime, "compute_dtype", lambda device, amp=True: torch.bfloat16)
    run, _ = _run(tmp_path / "b", "clip.zeroshot", "--preset", "smoke")
    second = json.loads((run / "env.json").read_text())["sources"]["embeddings_test"]
    assert second["file"].endswith("-bf16.pt") and second["cache_hit"] is False


def test_image_embeddings_past_the_memory_limit_go_to_a_memory_mapped_file(monkeypatch):
    import os
    from pathlib import Path

    class Encoder(torch.nn.Module):  # the one method compute_embeddings calls
        def encode_images(self, images):
            return images.float().flatten(1)[:, :8] * 2

    images = torch.randint(0, 255, (40, 3, 4, 4), dtype=torch.uint8)
    in_memory, _ = clip_exp.compute_embeddings(Encoder(), images, torch.device("cpu"), batch_size=16)
    monkeypatch.setenv("ATML_FEATURES_IN_MEMORY_MB", "0")
    spilled, _ = clip_exp.compute_embeddings(Encoder(), images, torch.device("cpu"), batch_size=16)
    assert torch.equal(in_memory, spilled) and spilled.shape == (40, 8)
    maps = Path("/proc/self/maps").read_text()
    assert "/features/features-" in maps and "(deleted)" in maps  # file pages, not anonymous memory
    assert not any((Path(os.environ["ATML_CACHE"]) / "features").iterdir())
