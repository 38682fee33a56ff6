"""A model dir's facts and turn rules, at the bottom of the package: everything above (loading, GGUF, training,
inference, eval) asks here and never re-derives them.

- `chat`: llmcycle's chat template, rendering, the fallbacks for a base without a template, system-message folding;
- `mask`: the assistant mask (which tokens fine-tuning trains), for any template;
- `ids`: end-of-turn, stop and pad ids, and generation_config.json;
- `facts`: context length (one rule, sliding window included) and the stored dtype;
- `fim`: the fill-in-the-middle markers, the training layout and the infill prompt.
"""

from llmcycle.modeldir.chat import (BOS, CHAT_TEMPLATE, DEFAULT_SYSTEM_POLICY, IM_END, IM_START, SPECIAL_TOKENS,
                                    SystemPolicy, drops_system, ensure_chat_template, fold_system_template,
                                    prepare_template, render_chat, say_once)
from llmcycle.modeldir.facts import base_dtype_name, context_length, sliding_window
from llmcycle.modeldir.ids import end_of_turn_id, pad_token_id, stop_token_ids, write_generation_config
from llmcycle.modeldir.mask import IGNORE, Example, end_of_turn_markers, tokenize_with_mask

__all__ = [
    "BOS", "CHAT_TEMPLATE", "DEFAULT_SYSTEM_POLICY", "IM_END", "IM_START", "SPECIAL_TOKENS", "SystemPolicy",
    "drops_system", "ensure_chat_template", "fold_system_template", "prepare_template", "render_chat", "say_once",
    "base_dtype_name", "context_length", "sliding_window",
    "end_of_turn_id", "pad_token_id", "stop_token_ids", "write_generation_config",
    "IGNORE", "Example", "end_of_turn_markers", "tokenize_with_mask",
]
