"""The one training loop, its checkpoints and the frozen-backbone feature cache."""
