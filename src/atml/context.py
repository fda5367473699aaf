"""What an experiment's ``run(cfg, ctx)`` receives besides its config: the run folder, the device, the console, and
the one way to build a model (:meth:`RunContext.model`: atml's own weights made first, built through the model
factory, its source recorded)."""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, overload

import torch

from atml import views
from atml.console import QUIET, Reporter
from atml.models.clip import CLIPModel
from atml.models.cnn import CNN
from atml.models.types import Built
from atml.models.vit import ViT
from atml.provenance import Source
from atml.run_dir import RunDir


@dataclasses.dataclass
class RunContext:
    """What an experiment may use besides its config: the folder, the device, the console."""

    run: RunDir
    device: torch.device
    preset: str
    offline: bool
    report: Reporter = QUIET
    """Where messages and progress go (:meth:`Reporter.resolved` for this process)."""
    sources: dict[str, Source] = dataclasses.field(default_factory=dict)
    """Where the run's inputs came from, by kind (``data``, ``weights`` ...), as typed records."""
    is_main: bool = True
    """False on torchrun ranks other than 0, which compute but write nothing."""
    name: str = ""
    """The experiment's name, for progress lines."""
    private: list[Path] = dataclasses.field(default_factory=list)
    """Scratch folders of a rank other than 0, removed when its run ends."""

    @property
    def say(self) -> Callable[[str], None]:
        """One line to the run's console (nothing on other torchrun ranks)."""
        return self.report.say

    @property
    def progress(self) -> bool:
        """Whether long steps show progress bars."""
        return bool(self.report.progress)

    def step(self, message: str) -> None:
        """One progress line for a long step that has no epochs (features, embeddings, probes)."""
        self.say(f"[{self.name or 'atml'}] {message}")

    def record_source(self, kind: str, value: Source) -> None:
        """Note where the ``data`` or ``weights`` came from; written to ``env.json`` at once."""
        self.sources[kind] = value
        env = self.run.read_env()
        env.setdefault("sources", {})[kind] = value.to_json()
        self.run.write_env(env)

    def sources_json(self) -> dict[str, Any]:
        """The sources as ``results.json`` holds them."""
        return {kind: value.to_json() for kind, value in self.sources.items()}

    def record_env(self, key: str, value: Any) -> None:
        """A top-level entry of ``env.json`` (``data``: how the run's data was had), written at once."""
        env = self.run.read_env()
        env[key] = value
        self.run.write_env(env)

    def checkpoint(self, name: str) -> Path:
        return self.run.checkpoints / f"{name}.pt"

    def _recipe(self, name: str, weights: str, *, family: str, epochs: int | None, seed: int) -> str | None:
        """The recipe key of weights atml trains itself (the demo's ``digits``), trained first on this run's device
        and console when they are not cached yet (:func:`atml.pretrained.ensure`); None for any other weights."""
        from atml import pretrained

        return pretrained.ensure(name, weights, family=family,
                                 training=pretrained.Training(epochs, seed, self.device, self.progress, self.say))

    @overload
    def model(self, name: str, weights: str, *, family: Literal["cnn"], seed: int, epochs: int | None = ...,
              source: str = ..., label: str | None = ..., **options: Any) -> Built[CNN]: ...
    @overload
    def model(self, name: str, weights: str, *, family: Literal["vit"], seed: int, epochs: int | None = ...,
              source: str = ..., label: str | None = ..., **options: Any) -> Built[ViT]: ...
    @overload
    def model(self, name: str, weights: str, *, family: Literal["clip"], seed: int, epochs: int | None = ...,
              source: str = ..., label: str | None = ..., **options: Any) -> Built[CLIPModel]: ...
    @overload
    def model(self, name: str, weights: str, *, family: str, seed: int, epochs: int | None = ...,
              source: str = ..., label: str | None = ..., **options: Any) -> Built[Any]: ...
    def model(self, name: str, weights: str, *, family: str, seed: int, epochs: int | None = None,
              source: str = "weights", label: str | None = None, **options: Any) -> Built[Any]:
        """Model ``name`` with ``weights``, built through :func:`atml.models.factory.create` (offline as the run is):
        atml's own weights (the demo's ``digits``) are trained first on this run's device when not cached
        (``epochs``, ``seed``: their recipe's; ``seed`` also draws a random initialisation where the family takes
        one), and where the weights came from is recorded as ``source`` in
        env.json and results.json (``label``: the model's name there, where a run uses several). ``options`` go to
        the factory (``num_classes``, ``keep_head``, ``backend``, ``input_size``, ...)."""
        from atml.models import factory

        recipe = self._recipe(name, weights, family=family, epochs=epochs, seed=seed)
        if "seed" in factory.spec(family).options:  # a random initialisation drawn from the run's seed (CLIP)
            options.setdefault("seed", seed)
        built: Built[Any] = factory.create(name, weights, family=family, offline=self.offline, recipe=recipe,
                                           **options)
        self.record_source(source, built.info if label is None else dataclasses.replace(built.info, model=label))
        return built

    def save_figure(self, fig: Any, name: str) -> list[str]:
        """Save ``fig`` as PNG and PDF in ``figures/``; returns their paths relative to the run."""
        from atml import figures

        if not self.is_main:
            figures.close(fig)
            return [f"figures/{name}.png", f"figures/{name}.pdf"]
        return figures.save(fig, self.run.figures / name, relative_to=self.run.path)

    def save_view(self, view: views.View, name: str) -> list[str]:
        """Store an interactive view as ``views/NAME.json`` (for ``Results.views``); none on other ranks."""
        if not self.is_main:
            return []
        return [views.save(view, self.run.views / f"{name}.json", relative_to=self.run.path)]

    def thumbnails(self, images: Any) -> views.Sheet | None:
        """The run's thumbnail sheet (``views/thumbs.webp``) of ``images``, which views index into; written once
        per run (a second call replaces it); none on other ranks."""
        if not self.is_main:
            return None
        return views.thumbnail_sheet(images, self.run.views, relative_to=self.run.path)

    def scratch(self, name: str) -> Path:
        """A folder for files a run generates for itself (smoke datasets); private to this rank."""
        if self.is_main:
            return self.run.path / name
        self.private.append(Path(tempfile.mkdtemp(prefix=f"atml-rank-{name}-")))
        return self.private[-1]
