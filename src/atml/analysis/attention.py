"""Numbers about ViT attention: CLS maps, rollout, and how heads differ.

Every function takes attention probabilities as recorded by :meth:`atml.models.vit.ViT.attention`:
one ``(B, H, T, T)`` tensor per layer, token 0 the class token, then ``grid * grid`` patches.
"""

from __future__ import annotations

import torch


def cls_to_patches(attn: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """The class token's attention to each patch, ``(B, H, N)``, renormalised to sum to 1 per head."""
    row = attn[:, :, 0, prefix:]
    return row / row.sum(-1, keepdim=True).clamp_min(1e-12)


def rollout(maps: list[torch.Tensor], prefix: int = 1) -> torch.Tensor:
    """Attention rollout (Abnar and Zuidema 2020): CLS-to-patch flow through all layers, ``(B, N)``.

    Heads are averaged, the residual path added as the identity and rows renormalised,
    then the layers' matrices are multiplied from the first to the last.
    """
    result = None
    for attn in maps:
        result = rollout_step(attn, result)
    assert result is not None
    return rollout_flow(result, prefix)


def rollout_step(attn: torch.Tensor, result: torch.Tensor | None) -> torch.Tensor:
    """One layer of :func:`rollout`: ``(B, H, T, T)`` attention times the product so far ``(B, T, T)``.

    Lets a caller consume the layers one at a time, as the model computes them.
    """
    a = attn.float().mean(1)
    a = a + torch.eye(a.shape[-1], device=a.device)
    a = a / a.sum(-1, keepdim=True)
    return a if result is None else a @ result


def rollout_flow(result: torch.Tensor, prefix: int = 1) -> torch.Tensor:
    """The CLS row of the rolled-out product, over the patches, renormalised: ``(B, N)``."""
    flow = result[:, 0, prefix:]
    return flow / flow.sum(-1, keepdim=True)


def entropy(dist: torch.Tensor) -> torch.Tensor:
    """Entropy in nats along the last axis (0 for one-hot, log N for uniform)."""
    return -(dist * dist.clamp_min(1e-12).log()).sum(-1)


def head_similarity(cls_maps: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity between the heads' CLS maps ``(B, H, N)``, per image ``(B,)``."""
    unit = torch.nn.functional.normalize(cls_maps.float(), dim=-1)
    sim = unit @ unit.transpose(1, 2)  # (B, H, H)
    h = sim.shape[-1]
    off = sim.sum((1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(-1)
    return off / (h * (h - 1)) if h > 1 else torch.ones(sim.shape[0])


def mean_distance(attn: torch.Tensor, grid: int, patch: int, prefix: int = 1) -> torch.Tensor:
    """Mean attention distance in pixels per head ``(H,)`` (Dosovitskiy et al. 2021, Fig. 7).

    Patch-to-patch attention only, renormalised per query, weighted by the distance between
    patch centres, averaged over queries and images.
    """
    coords = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1).reshape(-1, 2)
    dist = torch.cdist(coords.float(), coords.float()).to(attn.device) * patch  # (N, N)
    a = attn[:, :, prefix:, prefix:].float()
    a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
    return (a * dist).sum(-1).mean((0, 2))
