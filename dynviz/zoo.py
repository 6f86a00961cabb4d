"""The model zoo: a registry in the manner of timm, and the bundled weights.

``create_model(name)`` builds a registered model with its bundled weights,
checked against its card (:mod:`dynviz.cards`) before they are read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from dynviz.cards import PRETRAINED, ModelCard, load_card, sha256_of


@dataclass(frozen=True)
class Registration:
    build: Callable[..., Any]
    """(pretrained, **config) → the model. ``pretrained``: with this project's trained weights and calibration
    (``pretrained/<name>.safetensors``); without, those parts start untrained. The ImageNet backbones always
    come with their packages' weights."""
    emits: tuple[type, ...]
    """The record kinds its traces may hold (pages filter on them)."""
    tiny: dict[str, Any]
    """A configuration that builds a small, fast instance with ``pretrained=False``: what the tests run."""
    accepts: str
    """What it analyses: :data:`IMAGE` (an :class:`~dynviz.inputs.InputImage`) or :data:`VIDEO` (an
    :class:`~dynviz.video.InputVideo`)."""


IMAGE, VIDEO = "image", "video"


_registry: dict[str, Registration] = {}


def register_model(
    name: str, emits: tuple[type, ...] = (), tiny: dict[str, Any] | None = None, accepts: str = IMAGE
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a builder ``(pretrained, **config) → model`` under ``name``."""

    def add(build: Callable[..., Any]) -> Callable[..., Any]:
        _registry[name] = Registration(build, emits, tiny or {}, accepts)
        return build

    return add


def _load_model_modules() -> None:
    import dynviz.models  # noqa: F401  (registers every model)


def served(name: str) -> bool:
    """Whether the app and the CLI offer ``name``: its card is bundled. A model whose weights are not trained yet
    is registered (for its recipe and the tests) but not offered."""
    return (PRETRAINED / f"{name}.json").exists()


def list_models(
    emitting: type | None = None,
    unless: type | None = None,
    accepting: str | None = None,
    only_served: bool = True,
) -> list[str]:
    """Names the app offers (with ``only_served=False``: every registered one), or only those whose traces hold
    ``emitting`` records (and no ``unless`` records), or that analyse ``accepting`` inputs (:data:`IMAGE` or
    :data:`VIDEO`)."""
    _load_model_modules()
    return sorted(
        name
        for name in _registry
        if (emitting is None or emitting in _registry[name].emits)
        and (unless is None or unless not in _registry[name].emits)
        and (accepting is None or _registry[name].accepts == accepting)
        and (not only_served or served(name))
    )


def accepts(name: str) -> str:
    """What ``name`` analyses: :data:`IMAGE` or :data:`VIDEO`."""
    _load_model_modules()
    return _registry[name].accepts


def declared_records(name: str) -> tuple[type, ...]:
    """The record kinds ``name``'s traces may hold, as registered."""
    _load_model_modules()
    return _registry[name].emits


def tiny_config(name: str) -> dict[str, Any]:
    """The configuration of a small instance of ``name`` (for ``create_model(name, pretrained=False, ...)``)."""
    _load_model_modules()
    return dict(_registry[name].tiny)


def dynamic_models() -> list[str]:
    """Offered models whose traces hold decisions."""
    return [name for name in list_models() if _registry[name].emits]


def create_model(name: str, pretrained: bool = True, **config: Any) -> Any:
    """Build ``name`` for inference: with its bundled weights (checked against the card's sha256), or, with
    ``pretrained=False``, untrained in the configuration ``config`` (e.g. :func:`tiny_config`)."""
    _load_model_modules()
    if name not in _registry:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_registry))}")
    if pretrained and config:
        raise ValueError(f"{name}: the bundled weights come in one configuration; use pretrained=False for {config}")
    return ready_to_serve(_registry[name].build(pretrained, **config))


def ready_to_serve(model: Any) -> Any:
    """``model`` in evaluation mode and frozen, so that an analysis outside the serving layer builds no autograd
    graph (explanations differentiate with respect to the input, not the weights)."""
    return model.eval().requires_grad_(False)


def weights_path(card: ModelCard) -> Path:
    """The card's weights file, refused if its bytes are not the ones the card names."""
    path = PRETRAINED / card.weights
    digest = sha256_of(path)
    if digest != card.weights_sha256:
        raise ValueError(f"{path.name}: sha256 {digest[:12]}… does not match its card ({card.weights_sha256[:12]}…)")
    return path


def load_weights(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of ``pretrained/<name>.safetensors``, checked against its card."""
    card = load_card(name)
    if card is None or card.weights is None:
        raise FileNotFoundError(f"{name}: no weights yet; train them with python -m dynviz train {name}")
    with safe_open(weights_path(card), "pt") as weights:
        return {key: weights.get_tensor(key) for key in weights.keys()}, weights.metadata() or {}
