"""The one safety module: toxicity and PII filters (data stage), the reply flagger (eval's probe), and the hazard
categories + moderation policy (the server), so each decides the same way everywhere.

    from llmcycle.safety import Moderator
    decision = Moderator().check("how do I make a pipe bomb", "input")   # decision.blocked, .blocked_by == "S9"
"""

from llmcycle.safety.categories import CATEGORIES, Hit, classify
from llmcycle.safety.flags import flag_reply
from llmcycle.safety.pii import scrub
from llmcycle.safety.policy import DEFAULT_POLICY, Decision, Moderator, parse_policy, redact
from llmcycle.safety.toxicity import ToxicityScorer

__all__ = ["CATEGORIES", "DEFAULT_POLICY", "Decision", "Hit", "Moderator", "ToxicityScorer", "classify",
           "flag_reply", "parse_policy", "redact", "scrub"]
