"""Check atml's GPU paths and measure throughput, with no download (random weights, generated data).

For ResNet-152 (torchvision), DeiT-Small/16 (timm) and CLIP ViT-B/32 (open_clip) at full
resolution (224 px): inference and training images/s in fp32 and under bf16 autocast
(ResNet in channels_last; bf16 on CUDA only, as in atml), optional ``torch.compile``, then DistributedDataParallel with
one process (nccl on CUDA, gloo on CPU) for a few training steps. Every check asserts a
finite loss and matching shapes; the script exits non-zero if one fails.

    python scripts/gpu_check.py                 # on a GPU machine: about 2-3 minutes
    python scripts/gpu_check.py --cpu --quick   # the same code paths on a CPU, tiny batches (tests)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def build_models() -> dict[str, tuple[nn.Module, Callable[[nn.Module, torch.Tensor], torch.Tensor]]]:
    """Random-weight models and a function giving a scalar training loss for a batch of images."""
    import open_clip
    import timm
    import torchvision

    def classify(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits.float(), torch.arange(len(x), device=x.device) % logits.shape[1])

    logging.getLogger().disabled = True  # open_clip warns that no pretrained weights were loaded: intended
    clip_model = open_clip.create_model("ViT-B-32", pretrained=None, quick_gelu=True)
    logging.getLogger().disabled = False
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat.", "a photo of a dog."])
    loss_fn = open_clip.ClipLoss()

    def contrastive(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        text = tokens[torch.arange(len(x)) % len(tokens)].to(x.device)
        img, txt, scale = model(x, text)
        return loss_fn(img.float(), txt.float(), scale.float())

    return {
        "resnet152": (torchvision.models.resnet152(weights=None), classify),
        "deit_small": (timm.create_model("deit_small_patch16_224", pretrained=False), classify),
        "clip_vit_b32": (clip_model, contrastive),
    }


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.encode_image(x) if hasattr(model, "encode_image") else model(x)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], torch.Tensor], images: int, iters: int, device: torch.device) -> float:
    out = fn()  # warm-up (and compile)
    assert torch.isfinite(out.float()).all(), "non-finite output"
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return images * iters / (time.perf_counter() - start)


def measure(name: str, model: nn.Module, loss_fn: Callable, device: torch.device, batch: int, iters: int,
            compile_model: bool) -> dict[str, float]:
    model = model.to(device)
    channels_last = name == "resnet152"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out: dict[str, float] = {}
    # bf16 autocast is atml's CUDA path; CPUs without native bf16 emulate it 10-30x slower
    for precision in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        model.eval()
        with torch.inference_mode(), autocast:
            out[f"infer_{precision}"] = rate(lambda: forward(model, x), batch, iters, device)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)

        def train_step() -> torch.Tensor:
            with autocast:
                loss = loss_fn(model, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        out[f"train_{precision}"] = rate(train_step, batch, iters, device)
    if compile_model:
        compiled = torch.compile(model)
        compiled.eval()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            out["infer_bf16_compiled"] = rate(lambda: forward(compiled, x), batch, iters, device)
    model.to("cpu")
    if device.type == "cuda":
        out["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.empty_cache()
    return out


def ddp_check(model: nn.Module, loss_fn: Callable, device: torch.device, batch: int, steps: int) -> dict[str, float]:
    """DistributedDataParallel with one process: the path torchrun takes, end to end."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        module = model.to(device).to(memory_format=torch.channels_last)
        if device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        ddp = nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        opt = torch.optim.SGD(ddp.parameters(), lr=1e-4)
        x = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
        losses = []
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(ddp, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sync(device)
        elapsed = time.perf_counter() - start
        assert all(map(lambda v: v == v and abs(v) != float("inf"), losses)), f"DDP loss not finite: {losses}"
        reduced = torch.tensor([1.0], device=device)
        dist.all_reduce(reduced)
        assert float(reduced) == 1.0
        precision = "bf16" if device.type == "cuda" else "fp32"
        return {"backend": backend, "steps": steps, f"train_{precision}": batch * steps / elapsed,
                "last_loss": losses[-1]}
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (no GPU needed)")
    parser.add_argument("--quick", action="store_true", help="batch 2, 1 timed iteration: checks paths, not speed")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (bf16 inference)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; pass --cpu to exercise the same paths on the CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu") if args.cpu else torch.device("cuda", 0)
    batch, iters = (2, 1) if args.quick else (args.batch, args.iters)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in the table
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check: {name}, torch {torch.__version__}, batch {batch}, 224 px, random weights, generated data")
    report: dict[str, object] = {"device": name, "torch": torch.__version__, "batch": batch}
    models = build_models()
    for model_name, (model, loss_fn) in models.items():
        figures = measure(model_name, model, loss_fn, device, batch, iters, args.compile)
        report[model_name] = figures
        print(f"  {model_name:<13} " + "  ".join(f"{k} {v:8.1f}" for k, v in figures.items()) + "  (img/s)")
    resnet, classify = models["resnet152"]
    report["ddp_resnet152"] = ddp = ddp_check(resnet, classify, device, batch, steps=max(2, iters // 2))
    rate_key = next(k for k in ddp if k.startswith("train_"))
    print(f"  DDP ({ddp['backend']}, 1 process) resnet152 {rate_key[6:]} training: {ddp[rate_key]:.1f} img/s, "
          f"loss {ddp['last_loss']:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    print("gpu_check: all paths ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
