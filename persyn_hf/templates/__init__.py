"""Jinja templates of persyn-hf's model and dataset cards, shipped as package data."""

from pathlib import Path


def template_path(name: str) -> str:
    """Path of the card template `name` (e.g. ``"router_card.md"``)."""
    path = Path(__file__).with_name(name)
    if not path.is_file():
        available = sorted(p.name for p in Path(__file__).parent.glob("*.md"))
        raise FileNotFoundError(f"No card template {name!r}; available: {available}")
    return str(path)
