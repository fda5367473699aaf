"""How atml's image-folder reader scales: first decode, cached read and anonymous memory at three sizes.

    python scripts/data_scale.py --json benchmarks/data-scale-cpu.json            # 1,000 / 5,000 / 20,000
    python scripts/data_scale.py --sizes 200,400 --json /tmp/quick.json           # a quick check

For each size it writes (once, under --root) a folder of N JPEGs of 500x375 in ImageFolder
layout (10 classes), then times, each in a fresh process and side by side:

- atml, first decode: ``atml.data.folder.load`` into an empty ``$ATML_CACHE`` (every core),
  then one pass over every image in batches of 64 from the memory-mapped cache;
- atml, cached: the same in a new process, the cache already built;
- torchvision: ``ImageFolder`` + ``DataLoader`` (num_workers = cores, batch 64, Resize(224) +
  CenterCrop(224) + PILToTensor), one pass;
- each first decode and torchvision pass ``--repeats`` times, alternated, the best of each kept
  (all the times are in the JSON);
- the decode-only limit: Pillow decoding (no resize) of 300 of the files on one core, times cores.

Memory is the peak *anonymous* resident memory (``RssAnon``: file pages of a memory map are
the kernel's to reclaim), sampled from this script every 10 ms and summed over the process
and its workers, above the process's own baseline after imports. Each pass sums every batch's pixels as 64-bit words
(modulo 2**64: one fast pass that touches every byte), so the decoded and the cached run can
be checked to give the same pixels. With zarr installed, the storage rows
compare random 64-image batches from numpy's memmap (atml's choice) and from zarr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

CLASSES = 10
SIZE = 224

_MEASURE = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    import torch

    def anon():
        with open("/proc/self/status") as handle:
            return next(int(l.split()[1]) for l in handle if l.startswith("RssAnon:")) * 1024

    def checksum(pixels):  # the uint8 pixels read as 64-bit words, summed modulo 2**64: one fast pass
        flat = pixels.reshape(-1)
        words = flat[: len(flat) // 8 * 8].view(np.uint64)
        return int(words.sum(dtype=np.uint64)) + int(flat[len(flat) // 8 * 8:].sum())

    mode, root = sys.argv[1], sys.argv[2]
    if mode == "atml":
        from atml.data import folder
        from atml.train.loop import Batches
    else:
        from torch.utils.data import DataLoader
        from torchvision import datasets, transforms
    torch.zeros(64, 3, 224, 224, dtype=torch.uint8).long().sum()  # torch's one-time allocations
    base = anon()
    start = time.perf_counter()
    total, images = 0, 0
    if mode == "atml":
        read = folder.load(root, size=224, progress=False)
        ready = time.perf_counter() - start
        for split in (read.data.train, read.data.val):
            for (batch,) in Batches((split.images,), 64):
                total = (total + checksum(batch.numpy())) % 2**64
                images += len(batch)
        extra = {"ready_s": ready, "from_cache": read.readiness.from_cache}
    else:
        tf = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224), transforms.PILToTensor()])
        loader = DataLoader(datasets.ImageFolder(root, transform=tf), batch_size=64,
                            num_workers=len(os.sched_getaffinity(0)))
        for batch, _ in loader:
            total = (total + checksum(batch.numpy())) % 2**64
            images += len(batch)
        extra = {}
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "images": images, "images_per_s": images / seconds, "base": base,
                      "pixel_sum": total, **extra}))
""")


def _write_one(args: tuple[Path, int, tuple[int, int]]) -> None:
    import numpy as np
    from PIL import Image

    path, i, (width, height) = args
    rng = np.random.default_rng(i)
    c = i % CLASSES
    yy, xx = np.mgrid[0:height, 0:width] * (375 / height)
    base = np.stack([(xx * (c + 1) / 5 + rng.uniform(0, 255)) % 256, (yy * (i % 7 + 1) / 4) % 256,
                     ((xx + yy) / 3 + 25 * c) % 256], -1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def write_folder(root: Path, n: int, photo: tuple[int, int] = (500, 375)) -> Path:
    """N JPEGs of ``photo`` (width, height) in ImageFolder layout, written once (a marker file says it is complete)."""
    if (root / ".complete").is_file():
        return root
    jobs = []
    for i in range(n):
        folder = root / f"class{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"img{i:07d}.jpg", i, photo))
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(_write_one, jobs, chunksize=64))
    (root / ".complete").write_text(str(n))
    return root


def measure(mode: str, root: Path, cache: Path) -> dict:
    """One pass in a fresh process; its peak anonymous memory (and its workers') sampled from here every 10 ms, so
    the sampling takes no time from the process measured."""
    env = {**os.environ, "ATML_CACHE": str(cache)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen([sys.executable, "-c", _MEASURE, mode, str(root)], stdout=out, stderr=err, env=env)
        peak = 0
        while child.poll() is None:
            peak = max(peak, sum(_anon(pid) for pid in _tree(child.pid)))
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        if child.returncode:
            raise SystemExit(f"{mode} on {root} failed:\n{err.read()[-3000:]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    result["peak_anon_mb"] = (peak - result.pop("base")) / 2**20
    return result


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc (cheap: the sampling must not slow what it measures)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo += [int(c) for c in handle.read().split()]
    return out


def _anon(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("RssAnon:")) * 1024
    except (OSError, StopIteration):
        return 0


def decode_limit(root: Path, files: int = 300) -> dict:
    from PIL import Image

    paths = sorted(root.rglob("*.jpg"))[:files]
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.load()
    per_core = len(paths) / (time.perf_counter() - start)
    cores = len(os.sched_getaffinity(0))
    return {"per_core": per_core, "cores": cores, "images_per_s": per_core * cores}


def pools(root: Path) -> dict:
    """Images/s of atml's decode step (decode, resize, crop) on one core, a thread per core, a process per core."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from atml.data.decode import decode_or_reason

    jobs: list[tuple[str, int, bool, str, int | None]] = [(str(p), SIZE, False, "bilinear", None)
                                                          for p in sorted(root.rglob("*.jpg"))]
    cores = len(os.sched_getaffinity(0))
    for path, *_ in jobs:  # the files in the page cache first: every pool then reads them from memory
        Path(path).read_bytes()

    def rate(run) -> float:
        start = time.perf_counter()
        count = sum(1 for _ in run())
        return count / (time.perf_counter() - start)

    out = {"images": len(jobs), "one core": rate(lambda: map(decode_or_reason, jobs))}
    with ThreadPoolExecutor(cores) as pool:
        out[f"{cores} threads"] = rate(lambda: pool.map(decode_or_reason, jobs))
    for method in ("fork", "forkserver", "spawn"):  # start-up included: a run pays it too
        def processes(method=method):
            with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context(method)) as pool:
                yield from pool.map(decode_or_reason, jobs, chunksize=16)
        out[f"{cores} processes ({method})"] = rate(processes)
    return out


def storage(cache: Path, batches: int = 200) -> list[dict]:
    """Random 64-image batches from atml's memory map and, when zarr is installed, from zarr (chunks of 64)."""
    import numpy as np

    folder = max((p for p in (cache / "datasets").iterdir() if p.is_dir()), key=lambda p: p.stat().st_size)
    manifest = json.loads((folder / "manifest.json").read_text())
    images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=tuple(manifest["shape"]))
    rng = np.random.default_rng(0)
    picks = [np.sort(rng.choice(len(images), 64, replace=False)) for _ in range(batches)]
    rows = [_time_reads("numpy memmap (atml)", lambda idx: images[idx], picks, "")]
    try:
        import zarr
    except ImportError:
        return rows
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        array = zarr.create_array(f"{tmp}/images.zarr", shape=images.shape, chunks=(64, *images.shape[1:]),
                                  dtype="uint8")
        start = time.perf_counter()
        for i in range(0, len(images), 1024):
            array[i:i + 1024] = images[i:i + 1024]
        write_s = time.perf_counter() - start
        rows.append(_time_reads(f"zarr {zarr.__version__} (chunks of 64 images, default codec)",
                                lambda idx: array.get_orthogonal_selection((idx,)), picks,
                                f"written in {write_s:.1f} s"))
    return rows


def _time_reads(name: str, read, picks: list, note: str) -> dict:
    read(picks[0])
    start = time.perf_counter()
    for idx in picks:
        read(idx)
    seconds = time.perf_counter() - start
    return {"storage": name, "random_batches_per_s": len(picks) / seconds,
            "images_per_s": 64 * len(picks) / seconds, "note": note}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "atml-data-scale"),
                        help="where the generated folders are written once and kept")
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--repeats", type=int, default=2,
                        help="first decodes and torchvision passes, alternated; the best of each is reported")
    parser.add_argument("--photo", default="500x375", help="the generated JPEGs' width x height")
    parser.add_argument("--pools-only", action="store_true",
                        help="only time the decoding pools on the smallest folder, added to an existing --json")
    args = parser.parse_args(argv)
    import PIL
    import torch
    import torchvision

    report = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(),
              "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__, "torchvision": torchvision.__version__,
              "pillow": PIL.__version__, "image": "JPEG 500x375, quality 90", "image_size": SIZE, "rows": []}
    with open("/proc/cpuinfo") as handle:
        report["cpu"] = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")),
                             report["cpu"])
    sizes = [int(s) for s in args.sizes.split(",")]
    width, height = (int(v) for v in args.photo.split("x"))
    photo = (width, height)
    base = Path(args.root) / ("" if args.photo == "500x375" else args.photo)
    report["image"] = f"JPEG {args.photo}, quality 90"
    if args.pools_only:
        report = json.loads(Path(args.json).read_text())
        report["pools"] = pools(write_folder(base / str(min(sizes)), min(sizes), photo))
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(report["pools"])
        return 0
    report["pools"] = pools(write_folder(base / str(min(sizes)), min(sizes), photo))
    report["repeats"] = args.repeats
    for n in sizes:
        root = write_folder(base / str(n), n, photo)
        firsts, peers = [], []
        for _ in range(args.repeats):  # alternated, so that a slow spell of a shared machine hits both sides
            with tempfile.TemporaryDirectory() as cache_dir:
                cache = Path(cache_dir)
                firsts.append(measure("atml", root, cache))
                if len(firsts) == args.repeats:
                    cached = measure("atml", root, cache)
                    if n == max(sizes):
                        report["storage"] = storage(cache)
            peers.append(measure("torchvision", root, cache))
        first = min(firsts, key=lambda r: r["seconds"])  # the best of the repeats, as timeit reports
        peer = min(peers, key=lambda r: r["seconds"])
        first["all_seconds"], peer["all_seconds"] = [r["seconds"] for r in firsts], [r["seconds"] for r in peers]
        row = {"images": n, "atml_first": first, "atml_cached": cached, "torchvision": peer,
               "decode_limit": decode_limit(root), "same_pixels_cached": first["pixel_sum"] == cached["pixel_sum"],
               "cached_share_of_first": cached["seconds"] / first["seconds"],
               "first_vs_torchvision": first["images_per_s"] / peer["images_per_s"]}
        report["rows"].append(row)
        print(f"{n:>6} images: atml first {first['images_per_s']:.0f} img/s ({first['peak_anon_mb']:.0f} MB anon), "
              f"cached {cached['seconds']:.2f} s ({cached['peak_anon_mb']:.0f} MB), torchvision "
              f"{peer['images_per_s']:.0f} img/s ({peer['peak_anon_mb']:.0f} MB); decode limit "
              f"{row['decode_limit']['images_per_s']:.0f} img/s", flush=True)
    for s in report.get("storage", []):
        print(f"storage: {s['storage']}: {s['images_per_s']:.0f} img/s in random 64-image batches {s['note']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
