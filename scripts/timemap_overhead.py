"""What mapping a run's time costs: a training step and a forward with and without ``atml.timemap.recording``.

    python scripts/timemap_overhead.py

Every ``atml run`` records where its time goes (global forward hooks and spans, :mod:`atml.timemap`). This times a
small CNN's training step (batch 64 of 28x28, SGD; 200 steps) and a ResNet-50 forward (batch 8 at 224 px; 5 calls)
both ways, alternated three times, and prints the medians and their ratio.
"""

from __future__ import annotations

import statistics
import time

import torch
import torchvision

from atml import timemap


def per_call(model: torch.nn.Module, x: torch.Tensor, calls: int, train: bool) -> float:
    """Seconds per call of ``model`` on ``x`` (a training step when ``train``), after three warm-up calls."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def one() -> None:
        if train:
            loss = model(x).float().pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(x)

    for _ in range(3):
        one()
    started = time.perf_counter()
    for _ in range(calls):
        one()
    return (time.perf_counter() - started) / calls


def main() -> None:
    small = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 4, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 4, 2, 1),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 20),
                                torch.nn.Linear(20, 64 * 7 * 7))
    cases = (("small CNN training step", small, torch.randn(64, 1, 28, 28), 200, True),
             ("ResNet-50 forward", torchvision.models.resnet50().eval(), torch.randn(8, 3, 224, 224), 5, False))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, model, x, calls, train in cases:
        plain, mapped = [], []
        for _ in range(3):
            plain.append(per_call(model, x, calls, train))
            with timemap.recording():
                mapped.append(per_call(model, x, calls, train))
        a, b = statistics.median(plain), statistics.median(mapped)
        print(f"{name}: {a * 1e3:.2f} ms plain, {b * 1e3:.2f} ms recorded, ratio {b / a:.3f}")


if __name__ == "__main__":
    main()
