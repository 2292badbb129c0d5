"""turnpack: exactly supervised, densely packed multi-turn chat batches for LLM fine-tuning."""

from turnpack._core import __version__

__all__ = ["__version__"]
