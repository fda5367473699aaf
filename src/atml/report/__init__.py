"""Figures in one paper style, and the report that gathers runs into one page."""

import sys as _sys
import types as _types
from typing import Any as _Any


class _CallablePackage(_types.ModuleType):
    """``atml.report(runs, out)`` is the public API's report builder, and ``atml.report`` is also this
    package: once it is imported Python binds the name to it, so the package answers the call itself."""

    def __call__(self, *args: _Any, **kwargs: _Any) -> _Any:
        from atml.api import report

        return report(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage

