"""Inception FID and KID through torch-fidelity, with weights that are verified before use.

torch-fidelity's extractor would unpickle a local weights file with ``weights_only=False``
(code in the file could run); atml instead reads the file itself (``weights_only=True``, SHA-256
prefix from the published file name checked) and hands the tensors to the extractor.
When the weights are neither cached nor downloadable (offline), the metrics are skipped
and the run says so: they are never computed with other weights.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import torch

from atml import timemap
from atml.analysis.generative import frechet_distance
from atml.errors import WeightsError
from atml.models import weights as wts

FILENAME = "weights-inception-2015-12-05-6726825d.pth"


def locate(spec: str, *, offline: bool) -> Path | None:
    """The weights file for ``spec`` (auto | off | a path); None when unavailable offline."""
    if spec == "off":
        return None
    if spec != "auto":
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsError(f"inception weights {path} do not exist; pass the torch-fidelity file {FILENAME}")
        return path
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    try:
        return wts.hub_file(URL_INCEPTION_V3, "torch-fidelity Inception-v3 (2015-12-05)", offline=offline)
    except WeightsError:
        return None  # "auto" means: when available (cached, or downloaded online); the run's notes say it was skipped


def extractor(path: Path, device: torch.device) -> torch.nn.Module:
    """torch-fidelity's ``inception-v3-compat`` 2048-d pool features, loaded from a verified file."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    state, _ = wts.read_state_dict(path)
    with mock.patch.object(fe, "load_state_dict_from_url", return_value=state):
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    result: torch.nn.Module = model.to(device).eval()
    return result


@torch.no_grad()
def features(model: torch.nn.Module, images01: torch.Tensor, device: torch.device, batch: int = 64) -> np.ndarray:
    """(N, 2048) features of grayscale images in [0, 1] (replicated to RGB, uint8 as the extractor expects)."""
    out = []
    for chunk in images01.split(batch):
        rgb = (chunk.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
        out.append(model(rgb.to(device))[0].double().cpu())
    return torch.cat(out).numpy()


@timemap.counted("analysis")
def fid_kid(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> dict[str, float]:
    """FID (same formula as :func:`frechet_distance`) and KID (torch-fidelity, polynomial kernel)."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    subset = min(1000, len(real), len(fake))
    kid = kid_features_to_metric(torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=100,
                                 kid_subset_size=subset, kid_degree=3, kid_gamma=None, kid_coef0=1,
                                 rng_seed=seed, verbose=False)
    return {"inception_fid": frechet_distance(real, fake), "inception_kid": kid["kernel_inception_distance_mean"],
            "inception_kid_std": kid["kernel_inception_distance_std"]}
