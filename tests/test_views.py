"""Interactive views as data: what a run stores is what the model computed, within the stated quantisation."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from atml import views
from atml.analysis import attention as att
from atml.models import factory
from atml.reporting import interactive
from atml.suite.vit import attention as attention_exp


def test_arrays_round_trip_little_endian():
    for dtype, values in (("float32", np.linspace(-3, 7, 12).reshape(3, 4)), ("int16", np.arange(-5, 5)),
                          ("uint8", np.arange(256)), ("int32", np.array([-1, 0, 70000]))):
        stored = views.array(values, dtype)
        assert stored["shape"] == list(np.shape(values))
        assert np.array_equal(views.read_array(json.loads(json.dumps(stored))), values.astype(dtype))


def test_row_quantisation_is_within_half_a_step_of_each_rows_maximum():
    rng = np.random.default_rng(0)
    rows = rng.dirichlet(np.ones(64) * 0.3, size=(5, 7))
    q, top = views.quantise_rows(rows)
    assert q.dtype == np.uint8 and q.max() == 255 and top.shape == (5, 7)
    error = np.abs(views.dequantise_rows(q, top) - rows)
    assert (error <= top[..., None] / 255 / 2 + 1e-7).all()


def test_attention_plan_keeps_heads_while_they_fit_then_the_mean_in_spread_layers():
    assert views.attention_plan(4, 3, 65, 64) == ([0, 1, 2, 3], True)  # vit-digits: everything
    assert views.attention_plan(12, 6, 197, 196) == (list(range(12)), False)  # DeiT-S: 2.8 M per head > 2 Mi
    layers, per_head = views.attention_plan(12, 6, 1370, 1369)  # DINOv2-S at 518 px: one layer's mean is 1.9 Mi
    assert (layers, per_head) == ([11], False)
    layers, per_head = views.attention_plan(24, 16, 577, 576)
    assert not per_head and layers[-1] == 23 and layers[0] == 0 and len(layers) == (1 << 21) // (577 * 576)


def test_scatter_refuses_panels_that_do_not_match_the_points():
    with pytest.raises(ValueError, match="panel a: \\(3, 2\\) points for 4 labels"):
        views.Scatter("t", {"a": np.zeros((3, 2))}, np.zeros(4, int), ["x"]).to_json()


def test_thumbnail_sheet_holds_each_image_in_its_tile(tmp_path):
    images = torch.zeros(5, 3, 32, 32, dtype=torch.uint8)
    for i in range(5):
        images[i, i % 3] = 40 * (i + 1)  # each image one flat colour
    sheet = views.thumbnail_sheet(images, tmp_path / "views", relative_to=tmp_path)
    assert (sheet.file, sheet.cols, sheet.count, sheet.tile) == ("views/thumbs.webp", 3, 5, 48)
    pic = np.asarray(Image.open(tmp_path / sheet.file).convert("RGB")).astype(int)
    for i in range(5):
        x, y = (i % 3) * 48 + 24, (i // 3) * 48 + 24  # the tile's centre: the image is centred in it
        expected = np.zeros(3)
        expected[i % 3] = 40 * (i + 1)
        assert np.abs(pic[y, x] - expected).max() <= 12, (i, pic[y, x])


def test_small_images_fill_their_tile_with_sharp_pixels(tmp_path):
    digit = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    digit[0, :, :, :4] = 255  # left half white
    views.thumbnail_sheet(digit, tmp_path, relative_to=tmp_path)
    pic = np.asarray(Image.open(tmp_path / "thumbs.webp").convert("L")).astype(int)
    assert pic.shape == (48, 48)  # 8 px x 6 fills the 48 px tile
    assert pic[24, 23] > 200 and pic[24, 24] < 60  # the white half ends at 4 x 6 px, with a sharp edge
    assert pic[24, 44] < 60 and pic[44, 30] < 60  # the black half reaches the far edge (not a centred 8 px)


def test_view_json_cannot_close_its_script_element():
    text = interactive.script_json({"captions": ["</script><script>alert(1)</script>"]})
    assert "</script>" not in text and "<" not in text
    assert json.loads(text)["captions"][0].startswith("</script>")


def test_attention_view_stores_what_the_model_computed():
    torch.manual_seed(0)
    model = factory.create("vit-digits", "random", family="vit", offline=True).model.eval()
    images = {f"img{i}": torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8) for i in range(2)}
    view = attention_exp.attention_view(model, images, torch.device("cpu"), "vit-digits")
    stored = view.to_json()
    assert (stored["grid"], stored["prefix"], stored["layers"], stored["heads"]) == (8, 1, [1, 2, 3, 4], 3)
    assert stored["per_head"]
    with torch.no_grad(), model.attention() as maps:
        model(model.preprocess(images["img1"][None]))
    second = stored["images"][1]
    got = views.dequantise_rows(views.read_array(second["maps"]), views.read_array(second["scale"]))
    for layer, attn in enumerate(maps):
        truth = attn[0, :, :, 1:].numpy()  # (heads, tokens, patches)
        assert np.abs(got[layer] - truth).max() <= truth.max() / 255 / 2 + 1e-6
    flow = views.dequantise_rows(views.read_array(second["rollout"]), views.read_array(second["rollout_scale"]))
    cls_flow = att.rollout(list(maps), 1)[0].numpy()
    assert np.abs(flow[0] - cls_flow).max() <= cls_flow.max() / 255 + 1e-6  # row 0 is the CLS rollout


def _deit_sized_attention(rng: np.random.Generator, images: int = 3) -> views.Attention:
    """A view the size DeiT-S at 224 px stores (12 layers, 6 heads, 197 tokens, 196 patches; the plan keeps the
    12 layers' head means within ATTENTION_BUDGET)."""
    layers, heads, tokens, patches = 12, 6, 197, 196
    kept, per_head = views.attention_plan(layers, heads, tokens, patches)
    shown = []
    for i in range(images):
        raw = rng.random((len(kept), heads if per_head else 1, tokens, patches)).astype(np.float32)
        shown.append(views.AttentionImage(f"img{i}", torch.randint(0, 256, (3, 224, 224), dtype=torch.uint8),
                                          raw / raw.sum(-1, keepdims=True), rng.random((tokens, patches))))
    return views.Attention("DeiT-S attention", 14, 1, kept, heads, per_head, shown)


def test_a_report_of_real_sized_views_is_thinned_to_its_budget_and_says_what_each_lost(tmp_path):
    """DeiT-S's attention at 224 px stored 2 MB of view data for 3 images; a 6-run report weighed 8.35 MB."""
    rng = np.random.default_rng(0)
    blocks = []
    for run in range(4):
        folder = tmp_path / f"run{run}"
        files = [views.save(_deit_sized_attention(rng), folder / "views" / "attention.json", relative_to=folder)]
        points = 5000
        scatter = views.Scatter("embeddings", {"t-SNE": rng.random((points, 2)), "UMAP": rng.random((points, 2))},
                                rng.integers(0, 10, points), [str(c) for c in range(10)])
        files.append(views.save(scatter, folder / "views" / "scatter.json", relative_to=folder))
        blocks += interactive.load(folder, files, f"run{run}")
    original = {b.id: json.loads(b.data) for b in blocks}
    assert sum(len(b.data) for b in blocks) > 3 * interactive.REPORT_BUDGET  # the page as it was
    said = interactive.fit(blocks)
    assert sum(len(b.data) for b in blocks) <= interactive.REPORT_BUDGET
    assert "thinned to fit the report's 2.0 MB budget" in said[0]
    assert any("DeiT-S attention: 12 layer(s)" in line and "the mean of the heads" in line for line in said[1:])
    for block in blocks:
        view = json.loads(block.data)
        if view["kind"] == "attention":
            assert view["layers"][-1] == 12  # the last layer is always kept
            before = original[block.id]["images"][0]
            was = views.dequantise_rows(views.read_array(before["maps"]), views.read_array(before["scale"]))
            now = views.dequantise_rows(views.read_array(view["images"][0]["maps"]),
                                        views.read_array(view["images"][0]["scale"]))
            assert np.abs(now[-1] - was[-1]).max() <= 2 * was[-1].max() / 255  # the kept layer's rows unchanged
        else:
            kept = views.read_array(view["labels"])
            assert 250 <= len(kept) < 5000 and len(views.read_array(view["panels"][0]["xy"])) == len(kept)


def _one_of_each(tmp_path):
    """A small view of each kind, as an experiment would store it."""
    rng = np.random.default_rng(0)
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    sheet = views.thumbnail_sheet(images, tmp_path / "views", relative_to=tmp_path)
    scatter = views.Scatter("s", {"t-SNE": rng.normal(size=(3, 2))}, np.array([0, 1, 1]), ["a", "b"],
                            thumbs=np.arange(3), sheet=sheet, names=["x.png", "y.png", "z.png"])
    attention = views.Attention("a", 2, 1, [0, 1], 2, True,
                                [views.AttentionImage("i", images[0], rng.random((2, 2, 5, 4)), rng.random((5, 4)))])
    heatmap = views.Heatmap("h", [views.HeatmapPanel("p", ["l1", "l2"], ["m1"], "A layer", "B layer",
                                                     rng.random((2, 1)))])
    saliency = views.Saliency("sal", [images[0]], [views.SaliencyEntry("m", "gradcam", rng.random((1, 4, 4)), [0.2],
                                                                       [0.7], 0.2, 0.7)])
    return {"scatter": scatter, "attention": attention, "heatmap": heatmap, "saliency": saliency}


def test_the_committed_view_schemas_are_the_ones_the_view_types_generate():
    assert json.loads(interactive.SCHEMAS.read_text()) == views.json_schemas(), "run: python scripts/update_readme.py"


def test_every_view_kind_as_stored_meets_its_schema_and_a_broken_one_does_not(tmp_path):
    import jsonschema

    schemas = json.loads(interactive.SCHEMAS.read_text())
    assert set(schemas) == set(views.VIEW_FILES)
    for kind, view in _one_of_each(tmp_path).items():
        views.save(view, tmp_path / f"{kind}.json", relative_to=tmp_path)
        stored = json.loads((tmp_path / f"{kind}.json").read_text())
        jsonschema.Draft202012Validator(schemas[kind]).validate(stored)
        for broken in ({**stored, "kind": "other"}, {**stored, "extra": 1},
                       {k: v for k, v in stored.items() if k != "title"}):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.Draft202012Validator(schemas[kind]).validate(broken)
    scatter = json.loads((tmp_path / "scatter.json").read_text())
    scatter["labels"] = {"dtype": "int16", "shape": [3]}  # no b64: explore.js would decode nothing
    with pytest.raises(jsonschema.ValidationError, match="b64"):
        jsonschema.Draft202012Validator(schemas["scatter"]).validate(scatter)
