"""Grids of runs: the spec (:mod:`.spec`) and its dispatch through submitit (:mod:`.dispatch`)."""
