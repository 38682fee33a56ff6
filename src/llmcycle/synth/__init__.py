"""Teacher data: instruction/chat records written by a teacher model (a local model dir, a GGUF file or an
OpenAI-compatible server), made diverse self-instruct style and passed through the data stage's filters.

`run(cfg, out)` writes an ordinary data dir (train/val/test.jsonl, card, manifest), atomically.
"""

from llmcycle.synth.config import SynthConfig
from llmcycle.synth.stage import run

__all__ = ["SynthConfig", "run"]
