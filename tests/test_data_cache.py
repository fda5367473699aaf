"""The dataset cache: decoded once, keyed by what decides the pixels, atomic, shared, checked, flat in memory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atml.data import cache, folder
from atml.data.decode import decode_square
from atml.errors import DataError


def _datasets() -> list[Path]:
    return sorted(p for p in cache.root().glob("*") if p.is_dir() and ".building-" not in p.name)


def _read(root: Path, **kw) -> folder.FolderRead:
    return folder.load(root, progress=False, **{"size": 16, **kw})


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test sees only the caches it built (the session's cache is shared by the other tests)."""
    monkeypatch.setenv("ATML_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def photos(tmp_path):
    return folder.write_folder(tmp_path / "photos", per_class=6)


def test_the_same_folder_twice_is_one_cache_read_back_as_a_memory_map(photos):
    first = _read(photos)
    assert not first.readiness.from_cache and first.readiness.images == 27
    again = _read(photos)
    assert again.readiness.from_cache and again.readiness.cache == first.readiness.cache
    assert torch.equal(first.data.train.images, again.data.train.images)
    assert torch.equal(first.data.val.labels, again.data.val.labels)
    assert _mapped_file(again.data.train.images).endswith(f"/{cache.IMAGES}")  # not a copy in anonymous memory


def _mapped_file(tensor: torch.Tensor) -> str:
    """The file whose memory map holds ``tensor``'s data ("" for anonymous memory)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= address < high:
            return fields[5] if len(fields) > 5 else ""
    return ""


@pytest.mark.parametrize("change", ["edit", "add", "remove", "size", "grey"])
def test_anything_that_changes_the_pixels_gives_another_cache(photos, change):
    before = _read(photos).readiness.cache
    kw = {}
    target = photos / "train" / "bees" / "bees_0.jpg"
    if change == "edit":
        Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(target)
        os.utime(target, ns=(1, 1))
    elif change == "add":
        Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(target.with_name("new.png"))
    elif change == "remove":
        target.unlink()
    elif change == "size":
        kw["size"] = 20
    else:
        kw["grayscale"] = True
    after = _read(photos, **kw)
    assert not after.readiness.from_cache and after.readiness.cache[0] != before[0]
    if change == "edit":
        assert int(after.data.train.images[6].max()) == 0  # the new pixels, not the cached ones


def test_a_corrupted_cache_is_detected_rebuilt_and_noted(photos):
    first = _read(photos)
    images = Path(first.readiness.cache[0]) / cache.IMAGES
    expected = first.data.train.images.clone()
    data = bytearray(images.read_bytes())
    data[0] ^= 0xFF
    images.write_bytes(bytes(data))
    again = _read(photos)
    assert not again.readiness.from_cache
    assert any("failed its check" in n and "checksums" in n for n in again.readiness.notes)
    assert torch.equal(again.data.train.images, expected)
    images.write_bytes(images.read_bytes()[:-100])  # truncated
    third = _read(photos)
    assert any("bytes, expected" in n for n in third.readiness.notes)


_BUILD = textwrap.dedent("""
    import json, sys, time
    from atml.data import cache, decode, folder
    if len(sys.argv) > 2:  # slow every decode down so the parent can act mid-build
        slow, real = float(sys.argv[2]), decode.decode_square
        decode.decode_square = lambda *a: (time.sleep(slow), real(*a))[1]
    read = folder.load(sys.argv[1], size=16, progress=False)
    print(json.dumps({"from_cache": read.readiness.from_cache, "decoded": read.readiness.decoded,
                      "sum": int(read.data.train.images.sum())}))
""")


def _spawn(root: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _BUILD, str(root), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy())


@pytest.mark.slow
def test_a_build_killed_midway_is_never_read_and_the_next_run_rebuilds(photos):
    child = _spawn(photos, "0.2")
    deadline = time.time() + 60
    while not list(cache.root().glob("*.building-*")) and time.time() < deadline:
        time.sleep(0.05)
    assert list(cache.root().glob("*.building-*")), "the build never started"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert _datasets() == []  # nothing complete-looking was left
    read = _read(photos)
    assert not read.readiness.from_cache and len(read.data.train) == 18
    assert not list(cache.root().glob("*.building-*"))  # the killed build's leftovers are gone


@pytest.mark.slow
def test_two_processes_asking_at_once_build_it_once_and_read_the_same_arrays(photos):
    children = [_spawn(photos, "0.05") for _ in range(2)]
    outs = [json.loads(c.communicate(timeout=120)[0]) for c in children]
    decoded = outs[0]["decoded"] + outs[1]["decoded"]
    assert sorted(decoded) == sorted(map(str, _datasets())) and len(decoded) == 2  # train and val, each built once
    assert outs[0]["sum"] == outs[1]["sum"]


@pytest.mark.slow
def test_a_full_disk_is_one_error_naming_the_path_and_earlier_caches_stay(photos, tmp_path):
    _read(photos)
    earlier = {p: (p / cache.IMAGES).read_bytes() for p in _datasets()}
    script = textwrap.dedent("""
        import resource, signal, sys
        from atml import cli
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)          # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))  # as if the disk filled after 20 KB
        sys.exit(cli.main(["run", "resnet.features", "--preset", "smoke", "--set", "data=folder",
                           "--data-dir", sys.argv[1], "--set", "image_size=24", "--out", sys.argv[2]]))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(photos), str(tmp_path / "runs")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr and len(lines) == 1
    assert "cannot write the dataset cache at" in lines[0] and str(cache.root()) in lines[0]
    assert {p: (p / cache.IMAGES).read_bytes() for p in _datasets()} == earlier
    assert not list(cache.root().glob("*.building-*"))


def test_too_little_free_space_is_refused_before_decoding(photos, monkeypatch):
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda _: type("Usage", (), {"free": 1000})())
    with pytest.raises(DataError, match=r"needs 0\.00 GB at .*datasets but 0\.00 GB is free"):
        _read(photos)


_MEMORY = textwrap.dedent("""
    import json, sys, threading, time
    from atml.data import folder
    from atml.train.loop import Batches

    peak = [0]
    def anon():
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("RssAnon:")) // 1024
    def watch():
        while True:
            peak[0] = max(peak[0], anon())
            time.sleep(0.002)
    import torch
    for (warm,) in Batches((torch.zeros(128, 3, 128, 128, dtype=torch.uint8),), 64, shuffle=True):
        warm.float().mean()  # torch's one-time allocations (thread pools, allocator arenas) before the baseline
    threading.Thread(target=watch, daemon=True).start()
    time.sleep(0.05)
    start = anon()
    read = folder.load(sys.argv[1], size=128, progress=False)
    total = 0
    for images, labels in Batches((read.data.train.images, read.data.train.labels), 64, shuffle=True):
        total += int(images.float().mean() > 0)
    for (images,) in Batches((read.data.val.images,), 64):
        total += int(images.float().mean() > 0)
    time.sleep(0.05)
    print(json.dumps({"growth_mb": peak[0] - start, "images": len(read.data.train) + len(read.data.val),
                      "from_cache": read.readiness.from_cache}))
""")


def _peak_growth(root: Path) -> dict:
    # glibc's dynamic mmap threshold keeps some freed 12 MB batch buffers in the heap and not others: +-30 MB of
    # noise unrelated to the data. A fixed threshold returns every large buffer to the kernel when it is freed.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    done = subprocess.run([sys.executable, "-c", _MEMORY, str(root)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("cached", [False, True])
def test_memory_does_not_grow_with_the_number_of_images(tmp_path_factory, cached):
    """800 vs 3,200 images at 128 px: 39 vs 157 MB of pixels. Holding the split adds 118 MB or more (the reader
    before the cache: +101 vs +441 MB); the bound, 10 MB, is a twelfth of that and leaves room for the decode
    threads' buffers (measured: +16-18 MB at both sizes, within 1 MB of each other)."""
    base = tmp_path_factory.getbasetemp() / "memory-folders"
    roots = {n: base / str(n) for n in (800, 3200)}
    for n, root in roots.items():
        if not root.exists():
            folder.write_folder(root, classes=("a", "b", "c", "d"), per_class=n // 4, with_val=False,
                                size=(60, 80))
    if cached:  # decoded by an earlier run: this one maps the cache
        for root in roots.values():
            _peak_growth(root)
    small, large = (_peak_growth(roots[n]) for n in (800, 3200))
    assert (small["images"], large["images"]) == (800, 3200)
    assert small["from_cache"] == large["from_cache"] == cached
    assert large["growth_mb"] - small["growth_mb"] < 10, (small, large)


def test_an_empty_folder_and_odd_images_are_clear_or_handled(tmp_path):
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    with pytest.raises(DataError, match=r"holds 0 class folder\(s\) with images \(empty: a, b\)"):
        _read(empty)
    odd = tmp_path / "odd"
    for name in ("a", "b"):
        (odd / name).mkdir(parents=True)
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(odd / "a" / "dot.png")
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(odd / "a" / "dot2.png")
    big = np.zeros((4000, 6000, 3), np.uint8)
    big[:, :3000] = 255
    Image.fromarray(big).save(odd / "b" / "big.jpg", quality=90)  # one image: the whole class goes to training
    read = _read(odd)
    assert len(read.data.train) == 2 and len(read.data.val) == 1
    assert int(read.data.val.images.min()) == int(read.data.val.images.max()) == 200  # 1x1 upsampled, flat
    big_row = read.data.train.images[read.data.train.labels == 1][0, 0, 8]
    assert big_row[:6].float().mean() > 240 and big_row[-6:].float().mean() < 15  # left white, right black


def test_jpeg_draft_decoding_matches_a_full_decode_closely(tmp_path):
    yy, xx = np.mgrid[0:600, 0:800]
    pixels = np.stack([xx % 256, yy % 256, (xx + yy) // 6 % 256], -1).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    fast = decode_square(tmp_path / "a.jpg", 64).astype(float)
    with Image.open(tmp_path / "a.jpg") as image:
        full = np.asarray(image.convert("RGB").resize((85, 64), Image.Resampling.BILINEAR)
                          .crop((10, 0, 74, 64))).transpose(2, 0, 1).astype(float)
    assert fast.shape == (3, 64, 64) and np.abs(fast - full).mean() < 4


def test_atml_cache_lists_what_is_cached_with_sizes_and_clears_it(photos, capsys):
    from atml import cli

    _read(photos)
    (cache.root().parent / "pretrained").mkdir()
    (cache.root().parent / "pretrained" / "resnet-digits.pt").write_bytes(b"x" * 5000)
    assert cli.main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "datasets/folder-photos-train-" in out and "18 images, 3 x 16 x 16, from " in out
    assert "models (demo)" in out and "pretrained" in out
    assert cli.main(["cache", "clear"]) == 0
    assert not cache.root().exists() and (cache.root().parent / "pretrained").exists()
    assert cli.main(["cache", "clear", "--all"]) == 0
    assert not (cache.root().parent / "pretrained").exists()
    assert cli.main(["cache", "--all"]) == 2
    capsys.readouterr()
    assert cli.main(["cache"]) == 0
    assert "holds nothing cached" in capsys.readouterr().out


def test_worker_processes_write_each_image_in_its_place_and_holes_of_unreadable_files_are_closed(tmp_path):
    """Past PROCESSES_FROM images each worker writes its image at its own offset; unreadable files leave holes
    that are closed by moving the later images down, so every image keeps its label."""
    root = tmp_path / "many"
    levels = {}
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(cache.PROCESSES_FROM // 2 + 10):
            path = root / c / f"{i:04d}.png"
            levels[path] = (i * 7 + (100 if c == "b" else 0)) % 256
            Image.fromarray(np.full((6, 6, 3), levels[path], np.uint8)).save(path)
    for broken in (root / "a" / "0003.png", root / "b" / "0050.png"):
        broken.write_bytes(b"broken")
        del levels[broken]
    read = _read(root, size=6, skip_bad=True)
    assert len(read.skipped) == 2 and read.readiness.images == len(levels)
    files, _ = folder.list_files(root, ["a", "b"])
    split = folder.split_files(files, [0 if p.parent.name == "a" else 1 for p in files], 2, 0.2, 0)
    for name, images in (("train", read.data.train.images), ("val", read.data.val.images)):
        expected = [levels[p] for p in split[name][0] if p in levels]
        assert images[:, 0, 0, 0].tolist() == expected
