"""Inference: one engine for chat, generate, eval and serve.

    from llmcycle.infer import Engine, GenerationSettings
    engine = Engine.load("runs/x/merged")
    [reply] = engine.chat([[{"role": "user", "content": "hi"}]], GenerationSettings(temperature=0))
"""

from llmcycle.infer.engine import Completion, Engine
from llmcycle.infer.settings import GenerationSettings

__all__ = ["Completion", "Engine", "GenerationSettings"]
