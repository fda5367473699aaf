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

from atml import timemap


def patch_of(size: int, grid: int, device: torch.device | None = None) -> torch.Tensor:
    """The patch row (or column) of each of ``size`` pixel rows: ``floor(i * grid / size)``, so the patches tile
    the image without overlap whether or not ``grid`` divides ``size`` (nearest-neighbour upsampling's rule).
    Scoring and removal both use it: a patch's score is the mean saliency of exactly the pixels it removes."""
    return torch.arange(size, device=device) * grid // size


def fill_masked(x: torch.Tensor, keep: torch.Tensor, grid: int, value: torch.Tensor) -> torch.Tensor:
    """Normalised images with every patch not in ``keep`` ``(B, K)`` set to ``value`` ``(1, C, 1, 1)``."""
    b, _, height, width = x.shape
    kept = torch.zeros(b, grid * grid, dtype=torch.bool, device=x.device)
    kept.scatter_(1, keep.to(x.device), True)
    rows, cols = patch_of(height, grid, x.device), patch_of(width, grid, x.device)
    pixel = kept.view(b, grid, grid)[:, rows][:, :, cols][:, None]
    return torch.where(pixel, x, value.to(x.device))


def patch_scores(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """``(B, H, W)`` saliency -> ``(B, grid * grid)`` mean saliency per patch, row by row, over the pixels
    :func:`fill_masked` removes for that patch."""
    b, height, width = maps.shape
    label = (patch_of(height, grid, maps.device)[:, None] * grid + patch_of(width, grid, maps.device)[None]).flatten()
    total = torch.zeros(b, grid * grid, dtype=torch.float64, device=maps.device)
    total.index_add_(1, label, maps.reshape(b, -1).double())
    count = torch.bincount(label, minlength=grid * grid).to(total)
    return (total / count).float()


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


@timemap.counted("analysis")
def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Spearman rank correlation of two maps ``(B, H, W)`` per image (the sanity check's similarity)."""
    from scipy.stats import spearmanr

    out = []
    for left, right in zip(a.reshape(len(a), -1).numpy(), b.reshape(len(b), -1).numpy()):
        rho = spearmanr(left, right).statistic if left.std() > 0 and right.std() > 0 else np.nan
        out.append(float(rho))
    return np.array(out)


def sanity_summary(rho: list[np.ndarray], method: str, model: str) -> tuple[float | None, str | None]:
    """The mean sanity rank correlation over the images where it is defined, and a note when some (or all) are
    not: a map constant over an image (for the trained or the randomised model) has no ranks to correlate."""
    values = np.concatenate(rho) if rho else np.array([])
    defined = values[~np.isnan(values)]
    if not len(defined):
        return None, (f"{model} {method}: no sanity rank correlation: its maps were constant on all {len(values)} "
                      "image(s), for the trained or the randomised model (no ranks to correlate)")
    note = None if len(defined) == len(values) else (
        f"{model} {method}: sanity rank correlation over {len(defined)} of {len(values)} images (the others' "
        "maps were constant, with no ranks to correlate)")
    return float(defined.mean()), note
