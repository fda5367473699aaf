"""atml: a lab for looking inside modern vision models."""

__version__ = "0.1.0"
