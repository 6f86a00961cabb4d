"""The model zoo: a registry in the manner of timm, and the bundled weights.

``create_model(name)`` builds a registered model with its bundled weights,
checked against its card (:mod:`dynviz.cards`) before they are read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from dynviz.cards import PRETRAINED, ModelCard, load_card, sha256_of

_registry: dict[str, Callable[[], Any]] = {}
_emits: dict[str, tuple[type, ...]] = {}


def register_model(name: str, emits: tuple[type, ...] = ()) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register a builder; ``emits`` names the trace record types its traces hold (pages filter on it)."""

    def add(builder: Callable[[], Any]) -> Callable[[], Any]:
        _registry[name] = builder
        _emits[name] = emits
        return builder

    return add


def _load_model_modules() -> None:
    import dynviz.models  # noqa: F401  (registers every model)


def list_models(emitting: type | None = None, unless: type | None = None) -> list[str]:
    """Registered names, or only those whose traces hold ``emitting`` records (and no ``unless`` records)."""
    _load_model_modules()
    return sorted(
        name
        for name in _registry
        if (emitting is None or emitting in _emits[name]) and (unless is None or unless not in _emits[name])
    )


def declared_records(name: str) -> tuple[type, ...]:
    """The record kinds ``name``'s traces may hold, as registered."""
    _load_model_modules()
    return _emits[name]


def dynamic_models() -> list[str]:
    """Registered models whose traces hold decisions."""
    _load_model_modules()
    return sorted(name for name in _registry if _emits[name])


def create_model(name: str) -> Any:
    """Build ``name`` with its weights (checked against the card's sha256)."""
    _load_model_modules()
    if name not in _registry:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_registry))}")
    return _registry[name]()


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
