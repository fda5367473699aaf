"""atml: a lab for looking inside modern vision models.

From Python (a notebook or a script), the same experiments the ``atml`` command runs::

    import atml

    atml.experiments()                                  # what there is, with presets and config fields
    run = atml.run("resnet.head", "smoke", epochs=1)    # a Run: typed metrics, tables, figures, notes
    run.metrics.by("val_acc", "resolution")
    runs = atml.run("resnet.head", "smoke", seeds=3)    # Runs: .summary() (mean, std, n), .to_frame() (pandas)
    atml.resume("runs/resnet.head-smoke-...")           # continue an interrupted run from its checkpoints
    atml.report([run], "reports/mine")                  # the HTML/Markdown/LaTeX report
    atml.model_info("resnet152"), atml.bench("resnet.head"), atml.speed(quick=True)

Nothing heavy is imported until one of these is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from atml._version import __version__ as __version__

__all__ = ["Bench", "Run", "Runs", "Speed", "bench", "experiments", "load", "model_info", "report", "resume", "run",
           "speed", "sweep"]

if TYPE_CHECKING:
    from atml.api import (
        Bench,
        Run,
        Runs,
        Speed,
        bench,
        experiments,
        load,
        model_info,
        report,
        resume,
        run,
        speed,
        sweep,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from atml import api

        return getattr(api, name)
    raise AttributeError(f"module 'atml' has no attribute {name!r}")
