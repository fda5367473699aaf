"""What every classification stage shares: a seeded head, its headline numbers, and whether it trained.

Used by the ResNet experiments and by ``vit.pooling``'s probes: a head initialised from its
own seed (so cached and uncached paths start identical), the final / best / train accuracy
of a stage's records, and the check that flags a stage that never rose above chance or
whose validation loss diverged, so the report never ranks it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from atml.results import Metric
from atml.train.loop import EpochRecord, History


def new_head(in_features: int, num_classes: int, seed: int) -> torch.nn.Linear:
    """A head initialised from its own seed, so cached and uncached paths start identical."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Linear(in_features, num_classes)


def stage_metrics(rows: Iterable[EpochRecord | Mapping[str, Any]]) -> list[Metric]:
    """A classification stage's headline numbers: final and best validation accuracy, final train accuracy, val loss
    (``rows``: :func:`atml.train.loop.fit`'s history, or the same records read back from metrics.jsonl)."""
    history = History.of(rows)
    val, train = history.phase("val"), history.phase("train")
    return [Metric("val_acc", val[-1]["acc"]), Metric("best_val_acc", max(r["acc"] for r in val)),
            Metric("train_acc", train[-1]["acc"]), Metric("val_loss", val[-1]["loss"])]


def training_problem(rows: Iterable[EpochRecord | Mapping[str, Any]], num_classes: int, n_val: int) -> str | None:
    """Why a stage's validation curve cannot be read as a result, or None when it trained.

    Never above chance: the best validation accuracy within two binomial standard errors of
    1 / classes. Diverged: the last validation loss more than twice its lowest and above its
    first. Such a stage is flagged in the report and never ranked.
    """
    val = History.of(rows).phase("val")
    if not val:
        return None
    chance = 1 / num_classes
    ceiling = chance + 2 * math.sqrt(chance * (1 - chance) / max(n_val, 1))
    best = max(r["acc"] for r in val)
    if best <= ceiling:
        return f"never above chance (best val acc {best:.3f} <= {ceiling:.3f}, chance + 2 standard errors)"
    losses = [r["loss"] for r in val]
    if len(losses) >= 3 and losses[-1] > 2 * min(losses) and losses[-1] > losses[0]:
        return f"validation loss diverged ({min(losses):.2f} at best, {losses[-1]:.2f} at the end)"
    return None
