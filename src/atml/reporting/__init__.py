"""Figures in one paper style, and the report that gathers runs into one page (``atml.report`` builds it)."""
