"""What umap's numba compilation costs a new process, with and without atml's cache=True import.

    python scripts/umap_compile.py plain    # import umap as it is, time the first UMAP of 200 points
    python scripts/umap_compile.py atml     # through atml.analysis.representation.umap_embed

Run each in fresh processes, twice: the plain import compiles every time; atml's first process compiles and writes
the cache, later ones read it. Delete ``umap/__pycache__/*.nbi`` and ``*.nbc`` first for a cold start.
"""

import sys
import time

started = time.perf_counter()
import numpy as np  # noqa: E402


def plain_umap(features: np.ndarray, seed: int = 0) -> np.ndarray:
    import warnings

    import umap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(umap.UMAP(n_neighbors=15, random_state=seed).fit_transform(features))


if sys.argv[1:] == ["atml"]:
    from atml.analysis.representation import umap_embed as embed
else:
    embed = plain_umap

x = np.random.default_rng(0).normal(size=(200, 50)).astype(np.float32)
imported = time.perf_counter()
embed(x)
print(f"{sys.argv[1:] or ['plain']}: import {imported - started:.2f} s, first UMAP of 200 points "
      f"{time.perf_counter() - imported:.2f} s")
