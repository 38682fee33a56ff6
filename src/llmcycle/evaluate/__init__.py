"""Evaluation: perplexity and bits-per-byte, generation metrics, safety and bias probes, side by side for several
models. `run(EvalConfig(), model, data_dir, out, compare=[...])` writes an eval artifact dir."""

from llmcycle.evaluate.stage import PROBES, EvalConfig, run

__all__ = ["EvalConfig", "PROBES", "run"]
