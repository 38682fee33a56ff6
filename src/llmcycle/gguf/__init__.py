"""GGUF in and out: `import_gguf` turns any supported GGUF file into an ordinary Hugging Face model dir, and
`write_gguf` (which the `export` stage, `llmcycle.export`, calls) writes a model as a GGUF file that llama.cpp runs
and that says what our engine says.

The tensor and tokenizer mapping is ours (`tensors.py`, `vocab.py`); the file format is the `gguf` package's.
"""

from llmcycle.errors import ModelLoadError


class GGUFError(ModelLoadError):
    """A GGUF file cannot be read, imported or written (corrupt, unsupported architecture or quant type)."""


QUANTS = ("f32", "f16", "q8_0", "q4_0")
