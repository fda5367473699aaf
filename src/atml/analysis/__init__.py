"""Pure functions that turn model outputs into numbers: no training, no files."""
