"""Saliency maps scored by what they claim: deletion and insertion (Petsiuk et al. 2018, RISE), and the model
randomisation sanity check (Adebayo et al. 2018).

The image is cut into a ``grid`` x ``grid`` lattice of patches and each patch gets the mean saliency of its
pixels. Deletion fills the most salient patches first (``fill_masked``: the code ``vit.masking`` masks with)
and follows the probability of the class the model predicted on the intact image; insertion starts from the
fully filled image and reveals the most salient patches first. A faithful map makes the deletion curve fall
early (low area) and the insertion curve rise early (high area). Areas are trapezoids over the fraction of
patches, from 0 to 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def fill_masked(x: torch.Tensor, keep: torch.Tensor, grid: int, value: torch.Tensor) -> torch.Tensor:
    """Normalised images with every patch not in ``keep`` ``(B, K)`` set to ``value`` ``(1, C, 1, 1)``."""
    b, _, size, _ = x.shape
    kept = torch.zeros(b, grid * grid, dtype=torch.bool, device=x.device)
    kept.scatter_(1, keep.to(x.device), True)
    patch = size // grid
    pixel = kept.view(b, 1, grid, grid).repeat_interleave(patch, 2).repeat_interleave(patch, 3)
    if pixel.shape[-1] != size:  # a size the grid does not divide: the last row and column follow their patch
        pixel = F.interpolate(kept.view(b, 1, grid, grid).float(), size=(size, size), mode="nearest").bool()
    return torch.where(pixel, x, value.to(x.device))


def patch_scores(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, H, W)`` saliency -> ``(B, grid * grid)`` mean saliency per patch, row by row."""
    return F.adaptive_avg_pool2d(maps[:, None].float(), grid).flatten(1)


def curves(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scores: torch.Tensor,
           target: torch.Tensor, grid: int, fill: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deletion and insertion curves ``(B, P + 1)``: the target class's probability with 0..P patches removed
    (deletion) or revealed (insertion), most salient first. ``predict``: normalised images -> probabilities."""
    b, patches = scores.shape
    order = scores.argsort(dim=1, descending=True)  # most salient first
    deletion, insertion = [], []
    rows = torch.arange(b)
    for k in range(patches + 1):
        removed, kept = order[:, :k], order[:, k:]
        deletion.append(predict(fill_masked(x, kept, grid, fill))[rows, target].float().cpu())
        insertion.append(predict(fill_masked(x, removed, grid, fill))[rows, target].float().cpu())
    return torch.stack(deletion, 1), torch.stack(insertion, 1)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under each row of ``(B, P + 1)`` over fractions 0..1 (trapezoids)."""
    steps = curve.shape[1] - 1
    return (curve[:, 1:] + curve[:, :-1]).sum(1) / (2 * steps)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation of two maps ``(B, H, W)`` per image (the sanity check's similarity)."""
    from scipy.stats import spearmanr

    out = []
    for left, right in zip(a.reshape(len(a), -1).numpy(), b.reshape(len(b), -1).numpy()):
        rho = spearmanr(left, right).statistic if left.std() > 0 and right.std() > 0 else np.nan
        out.append(float(rho))
    return np.array(out)
