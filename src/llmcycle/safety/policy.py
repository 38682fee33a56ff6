"""Moderation policy: what to do with each hazard category, on the way in (prompts) and out (replies).

Actions, strongest first: `block` (the reply is a refusal, finish_reason "content_filter"), `redact` (personal
data replaced by placeholders, the request goes on), `flag` (counted and logged, nothing changes), `allow`.
Every decision is passed to the moderator's listeners (the server's metrics and log).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from llmcycle.errors import ConfigError
from llmcycle.safety.categories import CATEGORIES, Hit, classify, prompt_judge
from llmcycle.safety.classifier import Verdict
from llmcycle.safety.growing_pii import GrowingScan
from llmcycle.safety.pii import replace_spans, scrub

ACTIONS = ("allow", "flag", "redact", "block")
DEFAULT_POLICY: dict[str, str] = {
    "S1": "block", "S2": "block", "S3": "block", "S4": "block", "S5": "flag", "S6": "flag", "S7": "redact",
    "S8": "flag", "S9": "block", "S10": "block", "S11": "block", "S12": "flag", "S13": "flag", "S14": "block",
}
REFUSAL = "I can't help with that."
REFUSALS = {"S11": "I can't help with that. If you are thinking about harming yourself, please talk to someone "
                   "you trust or call your local crisis line; you don't have to face this alone."}


# The operator writes the system and developer turns: personal data there (a support address) is theirs to send,
# so redaction only flags it; a harmful instruction there is blocked like anywhere else. Assistant history comes
# from the client like user turns do, and is moderated as they are.
OPERATOR_ROLES = ("system", "developer")
# A text longer than this is refused without being classified, so the cost of a decision stays bounded whatever
# is sent (about 8,000 tokens: more than the models served here read).
MAX_MODERATED_CHARS = 32_000
TOO_LONG = "input_too_long"


def redact(text: str) -> str:
    """Personal data replaced by placeholders (the data stage's scrub: e-mails, URLs, IPs, keys, cards, IBANs,
    SSNs, phones)."""
    return scrub(text)


@dataclass
class Decision:
    side: str  # "input" | "output"
    action: str  # the strongest action among the hits ("allow" when none)
    hits: list[Hit] = field(default_factory=list)
    text: str = ""  # the text to use: redacted when the action is redact
    blocked_by: str | None = None  # the category that blocked
    actions_taken: list[tuple[str, str]] = field(default_factory=list)  # (category, action) per category hit

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    @property
    def refusal(self) -> str:
        return REFUSALS.get(self.blocked_by or "", REFUSAL)



def parse_policy(spec: str | None) -> dict[str, str]:
    """`S6=block,S12=allow` on top of the default policy; `off` allows everything."""
    policy = dict(DEFAULT_POLICY)
    if not spec:
        return policy
    if spec.strip().lower() == "off":
        return {code: "allow" for code in CATEGORIES}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        code, _, action = part.partition("=")
        code, action = code.strip().upper(), action.strip().lower()
        if code not in CATEGORIES:
            raise ConfigError(f"moderation: unknown category {code!r} (categories: {', '.join(CATEGORIES)})")
        if action not in ACTIONS:
            raise ConfigError(f"moderation: {code}: unknown action {action!r} (actions: {', '.join(ACTIONS)})")
        policy[code] = action
    return policy


class Moderator:
    """Classify a text and apply the policy; listeners see every decision with at least one hit."""

    def __init__(self, policy: dict[str, str] | None = None,
                 listeners: Sequence[Callable[[Decision], None]] = (), max_chars: int = MAX_MODERATED_CHARS,
                 prompt_judge: Callable[[str], Verdict] | None = None):
        """`prompt_judge` decides inputs instead of the word classifier's `prompt_verdict` (the meaning probe,
        probe.py, where the server turns it on); replies are always judged by the word classifier."""
        self.policy = dict(DEFAULT_POLICY if policy is None else policy)
        self.listeners = list(listeners)
        self.prompt_judge = prompt_judge
        self.enabled = any(a != "allow" for a in self.policy.values())
        self.max_chars = max_chars

    @property
    def redacts_output(self) -> bool:
        """Whether replies have their personal data replaced (the privacy category's action is redact)."""
        return self.policy.get("S7") == "redact"

    def check(self, text: str, side: str, notify: bool = True, role: str = "user",
              judge: Callable[[str], Verdict] | None = None, scan: GrowingScan | None = None) -> Decision:
        """The decision for `text` (from `role`); `notify=False` for a look at a reply still streaming (counted
        once, at its end or when it is blocked), whose checks pass the same `growing_judge()` and `GrowingScan`
        each time."""
        if self.enabled and len(text) > self.max_chars:
            decision = Decision(side, "block", [], text, TOO_LONG, [(TOO_LONG, "block")])
            if notify:
                self.notify(decision)
            return decision
        if judge is None and side == "input":
            judge = self.prompt_judge or prompt_judge()
        hits = [h for h in classify(text, judge, scan) if self.policy.get(h.category, "flag") != "allow"] \
            if self.enabled else []
        if not hits:
            return Decision(side, "allow", [], text)
        actions = {h.category: self._action(h.category, role) for h in hits}
        action = max(actions.values(), key=ACTIONS.index)
        blocked_by = next((c for c, a in actions.items() if a == "block"), None)
        if action != "redact":
            out = text
        else:
            out = redact(text) if scan is None else replace_spans(text, scan.spans(text))
        decision = Decision(side, action, hits, out, blocked_by, sorted(actions.items()))
        if notify:
            self.notify(decision)
        return decision

    def _action(self, category: str, role: str) -> str:
        action = self.policy.get(category, "flag")
        return "flag" if action == "redact" and role in OPERATOR_ROLES else action

    def notify(self, decision: Decision) -> None:
        for listener in self.listeners:
            listener(decision)

    def check_messages(self, messages: list[dict]) -> tuple[Decision, list[dict]]:
        """Moderate every turn of a conversation, whatever its role (a harmful system prompt or a forged assistant
        turn is blocked like a user's): the strongest decision, and the messages to send on."""
        worst = Decision("input", "allow", [], "")
        out, hits, taken = [], [], []
        for message in messages:
            decision = self.check(str(message.get("content", "")), "input", role=str(message.get("role", "user")))
            out.append({**message, "content": decision.text} if decision.action == "redact" else message)
            hits += decision.hits
            taken += decision.actions_taken
            if ACTIONS.index(decision.action) > ACTIONS.index(worst.action):
                worst = decision
        return replace(worst, hits=hits, actions_taken=taken), out
