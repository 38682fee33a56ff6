"""Batch builders shared by the training methods, one module per kind of row.

- `sft`: masked chat examples, packed or padded (finetune, distill).
- `preference`: prompt + reply rows with completion masks, pairs or KTO rows (dpo/kto/orpo, grpo, reward).
- `prompts`: distinct prompts of a data dir and the seeded prompt-index batches of online methods (grpo, on-policy
  pairs, sequence distillation).
"""
