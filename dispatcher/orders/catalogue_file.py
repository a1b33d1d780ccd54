"""Reading config/services.yaml (validated by dispatcher.orders.catalogue)."""

from __future__ import annotations

from pathlib import Path

from config.settings import CONFIG_DIR
from config.yamlfile import load_yaml_model
from dispatcher.orders.catalogue import Catalogue, CatalogueError

__all__ = ["DEFAULT_FILE", "load_catalogue"]

DEFAULT_FILE = CONFIG_DIR / "services.yaml"


def load_catalogue(path: Path = DEFAULT_FILE) -> Catalogue:
    """Read and validate the catalogue, or raise CatalogueError naming the file and key."""
    return load_yaml_model(path, Catalogue, CatalogueError)
