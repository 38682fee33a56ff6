"""llmcycle: take a language model through its whole lifecycle."""

__version__ = "0.1.0"
