"""hatememes: a reproducible research pipeline for the Hateful Memes benchmark."""

__version__ = "0.1.0"
