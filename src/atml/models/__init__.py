"""Models built to be looked into: features and head separate, switches not forks."""
