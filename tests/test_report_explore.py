"""The report's interactive views, driven as a reader would in a real headless Chromium (Debian's, through its
chromedriver and Selenium): hover a point, click a patch, hover a CKA cell, pick a saliency map. Every check is
against the values stored in the run folder; the page loads with the network switched off."""

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atml import api, cli, views
from atml.reporting import interactive

pytestmark = pytest.mark.slow
VENDOR = Path(__file__).parent / "vendor"

RUNS = {
    "resnet.features": [],
    "vit.attention": ["--set", "arch=vit-digits", "--set", "data=digits"],  # every head stored: 65 tokens
    "compare.cka": [],
    "compare.saliency": [],
    "clip.gap": [],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("explore-runs")
    found = {}
    for name, extra in RUNS.items():
        assert cli.main(["run", name, "--preset", "smoke", *extra, "--out", str(out / name)]) == 0
        (found[name],) = list((out / name).iterdir())
    return found


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("explore-report") / "rep"
    assert cli.main(["report", *map(str, runs.values()), "--out", str(out)]) == 0
    return out / "report.html"


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are not installed; .ci/run installs the Debian packages "
                        "'chromium' and 'chromium-driver'")
        pytest.skip("chromium or chromedriver is not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
                "--force-device-scale-factor=1", "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)  # no Selenium Manager download
    # Before any page script: Ajv and the view schemas, and the hook explore.js calls on each view's data before
    # drawing it; a view that does not meet its kind's schema is counted (and logged), and the test reads the count.
    checker = ("window.atmlSchemaErrors = []; (function () { var ajv = new window.ajv2020({allErrors: true});"
               f" var schemas = {interactive.SCHEMAS.read_text()};"
               " var check = {}; Object.keys(schemas).forEach(function (k) { check[k] = ajv.compile(schemas[k]); });"
               " window.atmlCheckView = function (data) { var ok = check[data.kind] && check[data.kind](data);"
               " window.atmlSchemaChecked = (window.atmlSchemaChecked || 0) + 1;"
               " if (!ok) { var e = {kind: data.kind, title: data.title, errors: (check[data.kind] || {}).errors};"
               " window.atmlSchemaErrors.push(e); console.error('view schema: ' + JSON.stringify(e));"
               " throw new Error('view does not meet its schema: ' + data.title); } }; })();")
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                           {"source": (VENDOR / "ajv2020.min.js").read_text() + "\n" + checker})
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                "downloadThroughput": -1, "uploadThroughput": -1})
    yield driver
    driver.quit()


def _open(browser, page):
    browser.get(page.as_uri())
    assert browser.execute_script("return navigator.onLine") is False  # the network is off for the page
    ids = browser.execute_script("return Object.keys(window.atmlViews || {})")
    # every view met its schema before it was drawn (view-schemas.json, checked by Ajv in the page)
    assert browser.execute_script("return window.atmlSchemaErrors") == []
    assert browser.execute_script("return window.atmlSchemaChecked") == len(ids) > 0
    waiting = browser.find_elements("css selector", "div.atml-view:not([data-ready])")
    assert waiting == [], (len(waiting), browser.get_log("browser"))
    return ids


def _view(browser, ids, suffix):
    (vid,) = [i for i in ids if i.endswith(suffix)]
    root = browser.find_element("id", vid)
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", root)
    return vid, root


def _at(browser, canvas, x, y, click=False):
    """The mouse at canvas pixel (x, y) (Selenium offsets are from the element's centre)."""
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(browser).move_to_element_with_offset(canvas, round(x - canvas.size["width"] / 2),
                                                              round(y - canvas.size["height"] / 2))
    (chain.click() if click else chain).perform()


def _stored(run, name):
    return json.loads((run / "views" / f"{name}.json").read_text())


def _errors(browser):
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _isolated_point(browser, vid, n, start=0):
    """A shown point with no other within 10 px on the screen (hover picks the nearest within 8)."""
    xy = np.array(browser.execute_script(f"var v = atmlViews['{vid}']; var out = [];"
                                         f"for (var i = 0; i < {n}; i++) {{ out.push(v.screen(i)); }} return out;"))
    for i in [*range(start, n), *range(start)]:
        others = np.delete(np.arange(n), i)
        if np.hypot(*(xy[others] - xy[i]).T).min() > 10:
            return i, xy[i]
    raise AssertionError("every point has a neighbour within 10 px")


def test_hovering_a_point_shows_that_images_thumbnail_class_and_prediction(browser, page, runs):
    ids = _open(browser, page)
    vid, root = _view(browser, ids, "resnet-features-embeddings")
    stored = _stored(runs["resnet.features"], "embeddings")
    labels, thumbs = views.read_array(stored["labels"]), views.read_array(stored["thumbs"])
    predicted = views.read_array(stored["predicted"])
    canvas = browser.execute_script(f"return atmlViews['{vid}'].canvas")
    i, (x, y) = _isolated_point(browser, vid, len(labels), start=len(labels) // 2)
    _at(browser, canvas, x, y)
    tip = root.find_element("css selector", ".atml-tip")
    assert tip.get_attribute("data-point") == str(i)
    assert f"class: {stored['classes'][labels[i]]}" in tip.text
    assert f"predicted: {stored['classes'][predicted[i]]}" in tip.text
    thumb = tip.find_element("css selector", ".atml-thumb")
    assert thumb.get_attribute("data-tile") == str(thumbs[i])
    # its pixels: the tile of the run's thumbnail sheet, shown at twice its size
    shot = np.asarray(Image.open(io.BytesIO(thumb.screenshot_as_png)).convert("RGB")).astype(float)[1:-1, 1:-1]
    sheet = Image.open(runs["resnet.features"] / stored["sheet"]["file"]).convert("RGB")
    tile, cols = stored["sheet"]["tile"], stored["sheet"]["cols"]

    def tile_pixels(t):
        box = ((t % cols) * tile, (t // cols) * tile, (t % cols + 1) * tile, (t // cols + 1) * tile)
        return np.asarray(sheet.crop(box).resize((2 * tile, 2 * tile), Image.Resampling.NEAREST)).astype(float)

    assert shot.shape == (2 * tile, 2 * tile, 3)
    assert np.abs(shot - tile_pixels(thumbs[i])).mean() < 4
    assert np.abs(shot - tile_pixels(thumbs[(i + 1) % len(thumbs)])).mean() > 4 * np.abs(shot - tile_pixels(
        thumbs[i])).mean() + 4
    # another panel moves the point; the legend hides its class, and hovering its place shows nothing of it
    root.find_elements("css selector", ".atml-choices button")[3].click()
    assert root.get_attribute("data-panel") == "3"
    x, y = browser.execute_script(f"return atmlViews['{vid}'].screen({i})")
    root.find_element("css selector", f".atml-legend button[data-class='{labels[i]}']").click()
    _at(browser, canvas, x, y)
    assert tip.get_attribute("data-point") != str(i)
    assert _errors(browser) == []


def test_scroll_zooms_about_the_pointer_and_double_click_resets(browser, page):
    from selenium.webdriver.common.action_chains import ActionChains, ScrollOrigin

    ids = _open(browser, page)
    vid, _root = _view(browser, ids, "resnet-features-embeddings")
    canvas = browser.execute_script(f"return atmlViews['{vid}'].canvas")
    before = browser.execute_script(f"return atmlViews['{vid}'].screen(0)")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, -200).perform()
    assert browser.execute_script(f"return atmlViews['{vid}'].state.zoom") > 1
    assert browser.execute_script(f"return atmlViews['{vid}'].screen(0)") != before
    ActionChains(browser).double_click(canvas).perform()
    assert browser.execute_script(f"return atmlViews['{vid}'].state.zoom") == 1
    assert browser.execute_script(f"return atmlViews['{vid}'].screen(0)") == before


def test_clip_points_show_the_caption_and_captions_are_triangles(browser, page, runs):
    ids = _open(browser, page)
    vid, root = _view(browser, ids, "clip-gap-modality_gap_embeddings")
    stored = _stored(runs["clip.gap"], "modality_gap_embeddings")
    kinds, labels = views.read_array(stored["kinds"]), views.read_array(stored["labels"])
    canvas = browser.execute_script(f"return atmlViews['{vid}'].canvas")
    n = len(labels)
    for want in (0, 1):  # an image, then a caption
        i, (x, y) = _isolated_point(browser, vid, n, start=n // 4 + want * n // 2)
        _at(browser, canvas, x, y)
        tip = root.find_element("css selector", ".atml-tip")
        assert tip.get_attribute("data-point") == str(i)
        assert stored["captions"][i] in tip.text and stored["classes"][labels[i]] in tip.text
        assert tip.text.startswith(stored["kind_names"][kinds[i]])
        assert len(tip.find_elements("css selector", ".atml-thumb")) == (1 if kinds[i] == 0 else 0)
    assert _errors(browser) == []


def _expected_row(image, query, layer, head, heads, per_head, mode):
    if mode == "rollout":
        row = views.dequantise_rows(views.read_array(image["rollout"]), views.read_array(image["rollout_scale"]))[query]
    else:
        maps = views.dequantise_rows(views.read_array(image["maps"]), views.read_array(image["scale"]))
        row = maps[layer, head, query] if head >= 0 or not per_head else maps[layer, :heads, query].mean(0)
    return row / row.sum()


def test_clicking_a_patch_shows_that_patchs_attention(browser, page, runs):
    from selenium.webdriver.common.keys import Keys

    ids = _open(browser, page)
    vid, root = _view(browser, ids, "vit-attention-attention")
    stored = _stored(runs["vit.attention"], "attention")
    grid, prefix, heads, per_head = stored["grid"], stored["prefix"], stored["heads"], stored["per_head"]
    image = stored["images"][0]
    canvas = browser.execute_script(f"return atmlViews['{vid}'].canvas")

    def overlay():
        return np.array(browser.execute_script(f"return atmlViews['{vid}'].overlay()"))

    last = len(stored["layers"]) - 1
    cls = overlay()
    assert root.get_attribute("data-query") == "0"
    assert np.abs(cls - _expected_row(image, 0, last, -1, heads, per_head, "attention")).max() < 1e-5
    patch = grid * 3 + 5  # row 4, column 6
    _at(browser, canvas, *browser.execute_script(f"return atmlViews['{vid}'].patchCentre({patch})"), click=True)
    assert root.get_attribute("data-query") == str(prefix + patch)
    clicked = overlay()
    assert np.abs(clicked - _expected_row(image, prefix + patch, last, -1, heads, per_head, "attention")).max() < 1e-5
    assert np.abs(clicked - cls).max() > 1e-4  # a different row (10x the match above): not the CLS map again
    assert "patch (row 4, col 6)" in root.find_element("css selector", ".atml-info").text
    # the first layer and the second head, then the rollout of the same patch
    slider = root.find_element("css selector", "input[type=range]")
    slider.send_keys(Keys.HOME)
    root.find_element("css selector", "[aria-label=head] button[data-choice='2']").click()
    assert (root.get_attribute("data-layer"), root.get_attribute("data-head")) == ("1", "2")
    assert np.abs(overlay() - _expected_row(image, prefix + patch, 0, 1, heads, per_head, "attention")).max() < 1e-5
    cls_button = root.find_element("css selector", ".atml-cls")
    assert cls_button.text.startswith("query: patch (row 4, col 6)")  # the clicked patch, not "CLS"
    assert slider.is_enabled()
    root.find_element("css selector", "[aria-label=show] button[data-choice='1']").click()
    assert root.get_attribute("data-mode") == "rollout"
    assert not slider.is_enabled()  # the rollout runs through every layer: the slider does not apply
    assert np.abs(overlay() - _expected_row(image, prefix + patch, 0, 1, heads, per_head, "rollout")).max() < 1e-5
    # another image keeps the query and shows its own attention
    root.find_element("css selector", "[aria-label=image] button[data-choice='1']").click()
    assert np.abs(overlay() - _expected_row(stored["images"][1], prefix + patch, 0, 1, heads, per_head,
                                            "rollout")).max() < 1e-5
    root.find_element("css selector", "[aria-label=show] button[data-choice='0']").click()
    assert slider.is_enabled()
    cls_button.click()
    assert root.get_attribute("data-query") == "0" and cls_button.text == "query: CLS"
    assert _errors(browser) == []


def test_every_canvas_takes_most_of_its_view_s_width(browser, page):
    ids = _open(browser, page)
    for vid in ids:
        root = browser.find_element("id", vid)
        canvas = browser.execute_script(f"return atmlViews['{vid}'].canvas")
        width = browser.execute_script("return arguments[0].clientWidth", root)
        assert canvas.size["width"] >= min(0.75 * width, 560), (vid, canvas.size["width"], width)


def test_two_runs_of_one_experiment_have_distinct_view_titles(runs, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(runs["compare.cka"], twin, ignore=shutil.ignore_patterns(".lock"))
    assert cli.main(["report", str(runs["compare.cka"]), str(twin), "--out", str(tmp_path / "rep")]) == 0
    html = (tmp_path / "rep" / "report.html").read_text()
    titles = re.findall(r'<div class="atml-view"[^>]*><h4>([^<]*)</h4>', html)
    assert len(titles) == 2 and len(set(titles)) == 2 and any("twin" in t for t in titles), titles


def test_hovering_a_cka_cell_names_both_layers_and_the_value(browser, page, runs):
    ids = _open(browser, page)
    vid, root = _view(browser, ids, "compare-cka-cka")
    stored = _stored(runs["compare.cka"], "cka")
    canvas = browser.execute_script(f"return atmlViews['{vid}'].canvas")
    for p in (0, 2):
        root.find_elements("css selector", ".atml-choices button")[p].click()
        panel = stored["panels"][p]
        values = views.read_array(panel["values"])
        rows = len(panel["rows"])
        r, k = rows - 1, 1  # the last layer's row, drawn at the top as in the static figure (first at the bottom)
        centre = browser.execute_script(f"return atmlViews['{vid}'].cellCentre({r}, {k})")
        assert centre[1] < browser.execute_script(f"return atmlViews['{vid}'].cellCentre(0, {k})")[1]
        _at(browser, canvas, *centre)
        tip = root.find_element("css selector", ".atml-tip")
        assert (tip.get_attribute("data-row"), tip.get_attribute("data-col")) == (panel["rows"][r], panel["cols"][k])
        assert float(tip.get_attribute("data-value")) == pytest.approx(float(values[r, k]), abs=1e-6)
        assert f"{panel['row_label']}: {panel['rows'][r]}" in tip.text
        assert f"= {values[r, k]:.3f}" in tip.text
        ticks = browser.execute_script(f"return atmlViews['{vid}'].ticks()")  # the names are on the axes, not only
        assert ticks["rows"][0] == panel["rows"][0] and ticks["cols"][0] == panel["cols"][0]  # on hover
        assert set(ticks["rows"]) <= set(panel["rows"]) and len(ticks["rows"]) >= min(rows, 4)
    assert _errors(browser) == []


def test_a_saliency_map_is_shown_with_its_images_auc(browser, page, runs):
    ids = _open(browser, page)
    vid, root = _view(browser, ids, "compare-saliency-saliency")
    stored = _stored(runs["compare.saliency"], "saliency")
    e = 2
    root.find_element("css selector", f"[aria-label=map] button[data-choice='{e}']").click()
    root.find_element("css selector", "[aria-label=image] button[data-choice='1']").click()
    entry = stored["entries"][e]
    info = root.find_element("css selector", ".atml-info").text
    assert info.startswith(f"{entry['model']}, {entry['method']}, image 2: ")
    assert f"deletion AUC {entry['deletion'][1]:.3g}" in info and f"insertion AUC {entry['insertion'][1]:.3g}" in info
    assert (root.get_attribute("data-entry"), root.get_attribute("data-image")) == (str(e), "1")
    assert _errors(browser) == []


def test_the_page_needs_no_network_and_logs_no_errors(browser, page):
    ids = _open(browser, page)
    assert len(ids) == 5
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(function (r) {"
                                     " return r.name; })")
    assert [u for u in fetched if not u.startswith("data:")] == []
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert _errors(browser) == []


def test_a_static_report_has_no_scripts(runs, tmp_path):
    assert cli.main(["report", *map(str, runs.values()), "--static", "--out", str(tmp_path / "static")]) == 0
    html = (tmp_path / "static" / "report.html").read_text()
    assert "<script" not in html and "atml-view" not in html
    assert html.count("<img ") >= 10  # the figures stay


def test_a_run_missing_its_view_is_named_and_still_reports_static(runs, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(runs["vit.attention"], copy, ignore=shutil.ignore_patterns(".lock"))
    (copy / "views" / "attention.json").unlink()
    assert cli.main(["report", str(copy), "--out", str(tmp_path / "a")]) == 3
    err = capsys.readouterr().err
    assert f"interactive view {copy / 'views' / 'attention.json'} listed in results.json is missing" in err
    assert "pass --static" in err and "Traceback" not in err
    assert cli.main(["report", str(copy), "--static", "--out", str(tmp_path / "b")]) == 0


def test_run_explore_is_the_same_views_on_one_page(browser, runs, tmp_path):
    explorer = api.load(runs["vit.attention"]).explore()
    page = explorer.save(tmp_path / "explore.html")
    assert _open(browser, Path(page)) == explorer.ids == ["view-attention"]
    # a notebook shows _repr_html_ as HTML in its page: the frame runs the views' own script
    cell = tmp_path / "notebook-output.html"
    cell.write_text(f"<!DOCTYPE html><html><body>{explorer._repr_html_()}</body></html>")
    browser.get(cell.as_uri())
    browser.switch_to.frame(browser.find_element("tag name", "iframe"))
    try:
        assert browser.execute_script("return Object.keys(window.atmlViews)") == ["view-attention"]
        assert browser.find_element("id", "view-attention").get_attribute("data-ready") == "true"
    finally:
        browser.switch_to.default_content()
    assert _errors(browser) == []


def test_every_stored_view_meets_its_schema(runs):
    import jsonschema

    schemas = json.loads(interactive.SCHEMAS.read_text())
    files = [f for run in runs.values() for f in sorted((run / "views").glob("*.json"))]
    kinds = {json.loads(f.read_text())["kind"] for f in files}
    assert kinds == set(schemas)  # the smoke runs write every kind
    for file in files:
        data = json.loads(file.read_text())
        jsonschema.Draft202012Validator(schemas[data["kind"]]).validate(data)


def test_a_view_that_breaks_its_schema_is_caught_before_it_is_drawn(browser, page, tmp_path):
    text = page.read_text()
    assert text.count('"kind":"heatmap"') == 1
    broken = tmp_path / "report.html"
    broken.write_text(text.replace('"kind":"heatmap"', '"kind":"heatmap","cells":[]'))
    browser.get(broken.as_uri())
    errors = browser.execute_script("return window.atmlSchemaErrors")
    assert [e["kind"] for e in errors] == ["heatmap"]
    assert "additionalProperties" in json.dumps(errors[0]["errors"])
    assert len(browser.find_elements("css selector", "div.atml-view:not([data-ready])")) >= 1  # not drawn
