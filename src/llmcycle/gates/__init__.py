"""The gates: whether a candidate model replaces the current one (`stage`), by rules stated on intervals (`rules`)."""

from llmcycle.gates.rules import GateConfig, verdict
from llmcycle.gates.stage import GatesStageConfig, decide, gate_candidate, held_out, run_gates

__all__ = ["GateConfig", "GatesStageConfig", "decide", "gate_candidate", "held_out", "run_gates", "verdict"]
