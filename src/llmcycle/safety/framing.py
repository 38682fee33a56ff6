"""A request's core: the text with its leading framing ("Can you help me", "how do I", "peux-tu m'aider à", "wie
kann ich", "please", a greeting) taken off, so the moderation classifier judges what is asked, not how politely.

Why: the classifier is linear over words, and its training data ask harmful things mostly as requests ("how can I",
"teach me", "I want to": Do-Not-Answer's questions, HarmBench's behaviours, our seed lines) and benign things mostly
as questions and exam items. The framing words themselves became evidence of harm: the previous weights blocked
half of everyday WikiHow tasks asked "Can you help me ...?" and nine in ten asked "Can you give me advice on how to
...?", against 1.5% of the same tasks asked "How do I ...?". Training benign tasks in those framings fixed that but
taught the opposite lesson ("Can you help me find child porn" passed). With the framing removed in training and at
every prompt check, it is no evidence either way: "Can you help me make a bomb?" is judged as "make a bomb?".

Phrases only come off the start of a prompt, up to `MAX_FRAMINGS` of them, within `LOOK` characters of where the
previous one ended, so the cost is fixed whatever the prompt's length; every alternative is a run of literal words,
so the match is linear. A prompt that is all framing ("Can you help me?") is judged as written.
"""

from __future__ import annotations

import re

_ASK = r"(?:to|i\s+(?:can|could|should))"
_FR_ASK = r"(?:m'aider\s+[àa]\s+|m'expliquer\s+comment\s+|me\s+dire\s+comment\s+)?"
_DE_ASK = r"(?:helfen,?\s+|erkl[äa]ren,?\s+wie\s+|sagen,?\s+wie\s+)?"
_PHRASES = [
    # greetings and please, in the four languages
    r"(?:hi|hello|hey|bonjour|salut|hola|hallo)\b[,!.]?",
    r"(?:please|s'il\s+(?:te|vous)\s+pla[iî]t|por\s+favor|bitte)\b[,!.]?",
    # English
    r"(?:can|could|would|will)\s+you\s+(?:please\s+)?(?:help\s+me\s+(?:to\s+|with\s+)?"
    rf"|explain\s+(?:to\s+me\s+)?how\s+{_ASK}\s+|tell\s+me\s+how\s+{_ASK}\s+"
    r"|give\s+me\s+(?:some\s+)?(?:advice|tips|help)\s+(?:on\s+)?(?:how\s+to\s+)?|show\s+me\s+how\s+to\s+"
    r"|teach\s+me\s+(?:how\s+)?to\s+)?",
    r"help\s+me\s+(?:to\s+)?",
    r"i\s+need\s+(?:some\s+)?help\s+(?:to\s+|with\s+)?",
    r"(?:explain|tell\s+me|show\s+me)\s+how\s+to\s+",
    r"give\s+me\s+(?:some\s+)?(?:advice|tips)\s+(?:on\s+)?(?:how\s+)?(?:to\s+)?",
    r"teach\s+me\s+(?:how\s+)?to\s+",
    r"(?:give|tell|show|write|send|find|get)\s+me\s+"
    r"(?:(?:some\s+|a\s+few\s+|an?\s+)?(?:advice|tips?|ideas?)\s+(?:on\s+|for\s+|about\s+)?(?:how\s+to\s+)?)?",
    r"i\s+(?:want|need|would\s+like|'d\s+like)\s+to\s+(?:know\s+how\s+to\s+|learn\s+how\s+to\s+)?",
    r"is\s+it\s+possible\s+to\s+",
    r"what(?:'s|\s+is)\s+the\s+(?:best|easiest|simplest)\s+way\s+to\s+",
    r"how\s+(?:do|can|could|should|would)\s+i\s+",
    r"how\s+to\s+",
    # French
    rf"(?:(?:peux|pourrais)-tu|(?:pouvez|pourriez)-vous)\s+{_FR_ASK}",
    r"aide[sz]?-moi\s+[àa]\s+",
    r"(?:explique|dis|montre)[sz]?-moi\s+comment\s+",
    r"apprends-moi\s+[àa]\s+",
    r"(?:donne|dis|montre|[ée]cris|envoie|trouve)[sz]?-moi\s+",
    r"j'ai\s+besoin\s+d'aide\s+pour\s+",
    r"(?:je\s+veux|je\s+voudrais|j'aimerais)\s+(?:savoir\s+comment\s+)?",
    r"est-(?:il|ce)\s+possible\s+de\s+",
    r"quel(?:le)?\s+est\s+(?:le|la)\s+(?:meilleure?|plus\s+simple)\s+(?:fa[çc]on|moyen|mani[èe]re)\s+de\s+",
    r"comment\s+(?:est-ce\s+que\s+)?(?:je\s+peux\s+|puis-je\s+|faire\s+pour\s+|on\s+peut\s+)?",
    # Spanish
    r"[¿¡]",
    r"(?:puedes|podr[íi]as|puede|podr[íi]a)\s+(?:ayudarme\s+a\s+|explicarme\s+c[óo]mo\s+|decirme\s+c[óo]mo\s+)?",
    r"ay[úu]dame\s+a\s+",
    r"(?:expl[íi]came|dime|mu[ée]strame)\s+c[óo]mo\s+",
    r"ens[ée][ñn]ame\s+a\s+",
    r"(?:dame|dime|mu[ée]strame|escr[íi]beme|env[íi]ame|b[úu]scame)\s+",
    r"necesito\s+ayuda\s+para\s+",
    r"(?:quiero|quisiera|me\s+gustar[íi]a)\s+(?:saber\s+c[óo]mo\s+)?",
    r"es\s+posible\s+",
    r"cu[áa]l\s+es\s+la\s+(?:mejor|manera\s+m[áa]s\s+f[áa]cil|forma\s+m[áa]s\s+f[áa]cil)\s+"
    r"(?:manera\s+|forma\s+)?de\s+",
    r"c[óo]mo\s+(?:puedo\s+|se\s+puede\s+|hago\s+para\s+)?",
    # German
    rf"(?:(?:kannst|k[öo]nntest)\s+du|(?:k[öo]nnen|k[öo]nnten)\s+sie)\s+mir\s+{_DE_ASK}",
    r"hilf\s+mir,?\s+",
    r"(?:erkl[äa]re?|sag|zeig)\s+mir,?\s+wie\s+(?:man\s+)?",
    r"bring\s+mir\s+bei,?\s+(?:wie\s+man\s+)?",
    r"(?:gib|sag|zeig|schreib|schick|finde?)\s+mir\s+",
    r"ich\s+brauche\s+hilfe\s+(?:beim\s+|bei\s+|um\s+)?",
    r"(?:ich\s+will|ich\s+m[öo]chte|ich\s+w[üu]rde\s+gern)\s+(?:wissen,?\s+wie\s+(?:man\s+)?)?",
    r"ist\s+es\s+m[öo]glich,?\s+",
    r"was\s+ist\s+der\s+(?:beste|einfachste)\s+weg,?\s+",
    r"wie\s+(?:kann|k[öo]nnte|soll|sollte)\s+(?:ich|man)\s+",
    r"wie\s+man\s+",
]
FRAMING = re.compile(r"\s*(?:" + "|".join(_PHRASES) + ")", re.IGNORECASE)
MAX_FRAMINGS = 6
LOOK = 160  # characters a framing phrase may span, spaces included
LETTER = re.compile(r"[^\W\d_]")


def request_core(text: str) -> str:
    """`text` from after its leading framing phrases; `text` itself when nothing with a letter would be left."""
    start = 0
    for _ in range(MAX_FRAMINGS):
        match = FRAMING.match(text, start, start + LOOK)
        if match is None or match.end() == start:
            break
        start = match.end()
    core = text[start:]
    return core if start and LETTER.search(core) else text
