"""atml: a lab for looking inside modern vision models.

From Python (a notebook or a script), the same experiments the ``atml`` command runs::

    import atml

    atml.experiments()                                  # what there is, with presets and config fields
    run = atml.run("resnet.head", "smoke", epochs=1)    # a Run: typed metrics, tables, figures, notes
    run.metrics.by("val_acc", "resolution")
    atml.report([run], "reports/mine")                  # the HTML/Markdown/LaTeX report

Nothing heavy is imported until one of these is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "experiments", "load", "report", "run"]

if TYPE_CHECKING:
    from atml.api import Run, experiments, load, report, run


def __getattr__(name: str) -> Any:
    if name in __all__:
        from atml import api

        return getattr(api, name)
    raise AttributeError(f"module 'atml' has no attribute {name!r}")
