"""Recipes that produce the bundled weights: ``python -m dynviz train NAME``."""

from dynviz.train import lite_cascade

RECIPES = {"lite_cascade": lite_cascade.calibrate}
