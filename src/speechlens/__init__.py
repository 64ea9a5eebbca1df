"""speechlens: what each layer of a speech model knows, and how its attention heads behave."""

__version__ = "0.1.0"
