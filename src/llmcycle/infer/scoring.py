"""Log-likelihoods through the model's own forward pass: one batched forward per chunk, right padded."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch

from llmcycle.errors import DataError
from llmcycle.infer.lengths import length_groups
from llmcycle.infer.packed import packable, packed_logprobs


def score_token_ids(engine: Any, contexts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                    batch_size: int = 8) -> list[list[float]]:
    """log p(target_i | context, target_<i) for every target token; contexts must hold at least one id."""
    if len(contexts) != len(targets):
        raise DataError(f"score: {len(contexts)} contexts for {len(targets)} texts")
    results: list[list[float]] = []
    for start in range(0, len(targets), batch_size):
        results.extend(_score_chunk(engine, contexts[start:start + batch_size], targets[start:start + batch_size]))
    return results


def _score_chunk(engine: Any, contexts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> list[list[float]]:
    sequences = [list(c) + list(t) for c, t in zip(contexts, targets)]
    for context, seq in zip(contexts, sequences):
        if not context:
            raise DataError("score: empty context (nothing to condition the first token on)")
        if len(seq) > engine.context_length:
            raise DataError(f"score: text is {len(seq)} tokens, the model's context is {engine.context_length}")
    ids, mask = right_pad(sequences, engine.pad_token_id)
    with torch.inference_mode():
        logits = engine.model(input_ids=ids.to(engine.device), attention_mask=mask.to(engine.device)).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for row, (context, target) in enumerate(zip(contexts, targets)):
        positions = torch.arange(len(context) - 1, len(context) - 1 + len(target))
        picked = logprobs[row, positions.to(logprobs.device), torch.tensor(list(target), device=logprobs.device)]
        out.append(picked.tolist())
    return out


def masked_nll(model: Any, batch: Sequence[tuple], pad_id: int, backend: Any = None) -> tuple[list[float], list[int]]:
    """Per-row summed NLL (nats) of the tokens marked in each row's mask, and how many were scored, in one forward
    pass of a batch of (ids, mask, ...) rows: perplexity and the bias pairs score with this. With a `backend` that
    runs packed rows (the engine's fast Llama forward) the rows run packed on its row-major weights, no padding in
    the products; else through `model`'s forward, right padded."""
    if packable(backend):
        return _packed_nll(backend, batch)
    device = next(model.parameters()).device
    width = max(len(row[0]) for row in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    scored = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, (ids, mask, *_) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(list(ids))
        attention[row, : len(ids)] = 1
        scored[row, : len(ids)] = torch.tensor(list(mask), dtype=torch.bool)
    mask = scored[:, 1:].to(device)
    with torch.no_grad():
        logits = scored_logits(model, input_ids.to(device), attention.to(device), mask)
    rows = torch.arange(len(batch), device=device).unsqueeze(1).expand_as(mask)[mask]
    # cross-entropy on the scored positions only: no full-vocabulary log-softmax over prompts and padding
    nll = torch.nn.functional.cross_entropy(logits.float(), input_ids[:, 1:].to(device)[mask], reduction="none")
    totals = torch.zeros(len(batch), dtype=torch.float64, device=device).index_add_(0, rows, nll.double())
    return totals.tolist(), mask.sum(dim=1).tolist()


def _packed_nll(backend: Any, batch: Sequence[tuple]) -> tuple[list[float], list[int]]:
    """`masked_nll` through one packed forward (infer.packed): each row alone, the head only where a token is scored."""
    rows, picks, targets, owners = [], [], [], []
    for row, (ids, mask, *_) in enumerate(batch):
        rows.append((list(ids), []))
        for column in range(1, len(ids)):
            if mask[column]:
                targets.append((len(picks), int(ids[column])))
                picks.append((row, column - 1))
                owners.append(row)
    totals, counts = [0.0] * len(batch), [0] * len(batch)
    for row, value in zip(owners, packed_logprobs(backend, rows, picks, targets) if picks else []):
        totals[row] -= value
        counts[row] += 1
    return totals, counts


def scored_logits(model: Any, input_ids: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits at the positions `mask` marks (predicting the next token), [marked, vocab]. Where the logits are
    exactly lm_head(decoder output), the head runs on those positions only: over a conversation whose user turns
    are not scored that skips a ~49k-wide product per token and a logits tensor of gigabytes."""
    if plain_head(model):
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention).last_hidden_state
        return model.get_output_embeddings()(hidden[:, :-1][mask])
    return model(input_ids=input_ids, attention_mask=attention).logits[:, :-1][mask]


def plain_head(model: Any) -> bool:
    return (hasattr(model, "get_decoder") and hasattr(model, "get_output_embeddings")
            and getattr(model.config, "model_type", "") in PLAIN_HEAD_MODELS)


def score_texts(engine: Any, texts: Sequence[str], contexts: Sequence[str] | None, batch_size: int = 8) -> list[float]:
    """Sum log-prob of each text; without a context the text is scored as a document start (after bos)."""
    tok = engine.tokenizer
    bos = tok.bos_token_id if tok.bos_token_id is not None else engine.pad_token_id
    ctx_ids, tgt_ids = [], []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise DataError(f"score: text {i} is empty")
        target = list(tok(text, add_special_tokens=False)["input_ids"])
        context = [bos] if contexts is None else list(tok(contexts[i])["input_ids"]) or [bos]
        ctx_ids.append(context)
        tgt_ids.append(target)
    return [float(sum(lp)) for lp in score_token_ids(engine, ctx_ids, tgt_ids, batch_size)]


def score_shared_context(engine: Any, context: Sequence[int], continuations: Sequence[Sequence[int]],
                         batch_size: int = 8) -> list[list[float]]:
    """Like `score_token_ids` with one context for every continuation, but the context (and the leading tokens
    all continuations share) runs once: its KV cache is repeated for a batch of right-padded continuation tails
    (multiple-choice answers share their question, and often their first words)."""
    if not context:
        raise DataError("score: empty context (nothing to condition the first token on)")
    longest = len(context) + max((len(c) for c in continuations), default=0)
    if longest > engine.context_length:
        raise DataError(f"score: text is {longest} tokens, the model's context is {engine.context_length}")
    if any(not c for c in continuations):
        raise DataError("score: an empty continuation")
    shared = _common_prefix(continuations)
    tails = [list(c)[shared:] for c in continuations]
    with torch.inference_mode():
        prefix = engine.model(input_ids=torch.tensor([list(context) + list(continuations[0][:shared])],
                                                     device=engine.device), use_cache=True, logits_to_keep=shared + 1)
        logprobs = torch.log_softmax(prefix.logits[0].float(), dim=-1)
        head = [float(logprobs[j, continuations[0][j]]) for j in range(shared)]
        first = logprobs[shared]
        if all(len(t) == 1 for t in tails):  # one-token answers ("yes"/"no"): the prefix says it all
            return [head + [float(first[t[0]])] for t in tails]
        cache = getattr(prefix, "cache", None) or prefix.past_key_values
        out: list[list[float]] = []
        for start in range(0, len(tails), batch_size):
            chunk = tails[start:start + batch_size]
            out.extend(head + row for row in _score_continuations(engine, cache, len(context) + shared, first, chunk))
    return out


def _common_prefix(continuations: Sequence[Sequence[int]]) -> int:
    """Leading tokens every continuation shares, leaving each at least its last token to score apart."""
    limit = min(len(c) for c in continuations) - 1
    n = 0
    while n < limit and all(c[n] == continuations[0][n] for c in continuations):
        n += 1
    return n


def _score_continuations(engine: Any, cache: Any, offset: int, first: torch.Tensor,
                         chunk: Sequence[Sequence[int]]) -> list[list[float]]:
    width = max(len(c) for c in chunk)
    ids = torch.full((len(chunk), width), engine.pad_token_id, dtype=torch.long)
    for row, cont in enumerate(chunk):
        ids[row, :len(cont)] = torch.tensor(list(cont))
    batch_cache = copy.deepcopy(cache)
    batch_cache.batch_repeat_interleave(len(chunk))
    positions = torch.arange(offset, offset + width).unsqueeze(0).expand(len(chunk), -1)
    mask = torch.ones(len(chunk), offset + width, dtype=torch.long)
    logits = engine.model(input_ids=ids.to(engine.device), cache=batch_cache, use_cache=True,
                          position_ids=positions.to(engine.device), attention_mask=mask.to(engine.device)).logits
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for row, cont in enumerate(chunk):
        target = torch.tensor(list(cont), device=logprobs.device)
        picked = [float(first[target[0]])]
        if len(cont) > 1:
            picked += logprobs[row, torch.arange(len(cont) - 1, device=logprobs.device), target[1:]].tolist()
        out.append(picked)
    return out


def score_questions(engine: Any, questions: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
                    batch_size: int = 8) -> list[list[list[float]]]:
    """`score_shared_context` for many (context, continuations) questions, `batch_size` questions per forward.

    On the fast backend one packed forward scores a batch (infer.packed). Otherwise one forward runs every
    question's context (plus its continuations' shared tokens), right padded; a second runs every continuation
    tail against its own question's rows of that KV cache. Batching questions matters on CPU: a forward reads
    every weight once, so a few dozen tokens per forward leave the cores waiting on memory."""
    packed = packable(getattr(engine, "backend", None))
    if not packed and not plain_head(engine.model):
        return [score_shared_context(engine, c, conts, batch_size) for c, conts in questions]
    batch = _packed_batch if packed else _question_batch
    order = sorted(range(len(questions)), key=lambda i: _row_length(questions[i]))  # similar lengths pad little
    out: list[list[list[float]] | None] = [None] * len(questions)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            for i, scores in zip(chunk, batch(engine, [questions[i] for i in chunk])):
                out[i] = scores
    return out  # type: ignore[return-value]


def _row_length(question: tuple[Sequence[int], Sequence[Sequence[int]]]) -> int:
    """Tokens a question runs: its context, then every continuation's tokens but the last."""
    context, conts = question
    return len(context) + sum(len(c) - 1 for c in conts)


def _split(engine: Any, context: Sequence[int], conts: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
    """(context + the tokens every continuation starts with, each continuation's remaining tokens), checked."""
    if not context or any(not c for c in conts):
        raise DataError("score: an empty context or continuation")
    longest = len(context) + max(len(c) for c in conts)
    if longest > engine.context_length:
        raise DataError(f"score: text is {longest} tokens, the model's context is {engine.context_length}")
    shared = _common_prefix(conts)
    return list(context) + list(conts[0][:shared]), [list(c)[shared:] for c in conts]


def _packed_batch(engine: Any, chunk: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list:
    """Scores of a chunk of questions from one packed forward (infer.packed): a row per question, holding its
    prefix and then every tail but the tail's last token; logits only where a token is scored."""
    rows, picks, targets, shared = [], [], [], []  # targets: (pick index, token) per scored token, in score order
    for q, (context, conts) in enumerate(chunk):
        prefix, tails = _split(engine, context, conts)
        shared.append(len(prefix) - len(context))
        rows.append((prefix, [t[:-1] for t in tails]))
        first = len(picks) + len(prefix) - len(context)  # the pick at the prefix's last token
        picks.extend((q, j) for j in range(len(context) - 1, len(prefix)))
        targets.extend((first - len(prefix) + len(context) + j, prefix[len(context) + j])
                       for j in range(len(prefix) - len(context)))
        column = len(prefix)
        for tail in tails:
            targets.append((first, tail[0]))
            targets.extend((len(picks) + j, token) for j, token in enumerate(tail[1:]))
            picks.extend((q, column + j) for j in range(len(tail) - 1))
            column += len(tail) - 1
    values = iter(packed_logprobs(engine.backend, rows, picks, targets))
    scores = []
    for (_, conts), n in zip(chunk, shared):
        head = [next(values) for _ in range(n)]
        scores.append([head + [next(values) for _ in range(len(c) - n)] for c in conts])
    return scores


# causal LMs whose logits are exactly lm_head(decoder output): no soft-capping or logit scaling
PLAIN_HEAD_MODELS = {"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "smollm3"}


def _question_batch(engine: Any, chunk: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list:
    prefixes, tails, ctx_lens = [], [], []
    for context, conts in chunk:
        prefix, tail = _split(engine, context, conts)
        prefixes.append(prefix)
        tails.append(tail)
        ctx_lens.append(len(context))
    decoder, head, device = engine.model.get_decoder(), engine.model.get_output_embeddings(), engine.device
    ids, mask = right_pad(prefixes, engine.pad_token_id)
    rest = [(q, k) for q in range(len(tails)) for k, t in enumerate(tails[q]) if len(t) > 1]
    result = decoder(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=bool(rest))
    cache = (getattr(result, "cache", None) or result.past_key_values) if rest else None
    # log-probs at every prefix position that predicts a shared token or a tail's first token
    rows = [q for q, p in enumerate(prefixes) for _ in range(ctx_lens[q] - 1, len(p))]
    cols = [j for q, p in enumerate(prefixes) for j in range(ctx_lens[q] - 1, len(p))]
    picked = torch.log_softmax(head(result.last_hidden_state[rows, cols]).float(), dim=-1)
    scores: list[list[list[float]]] = []
    at = 0
    for q, prefix in enumerate(prefixes):
        n = len(prefix) - ctx_lens[q] + 1
        block = picked[at:at + n]
        at += n
        shared_lp = [float(block[j, prefix[ctx_lens[q] + j]]) for j in range(n - 1)]
        scores.append([shared_lp + [float(block[n - 1, t[0]])] for t in tails[q]])
    if rest:
        _tail_forward(engine, decoder, head, cache, mask, prefixes, tails, rest, scores)  # selects rows in place
    return scores


def _tail_forward(engine, decoder, head, cache, prefix_mask, prefixes, tails, rest, scores) -> None:
    """Every tail's tokens but its last, against its own question's cache rows; appends the tail log-probs.

    Tails vary in length (PIQA's solutions run 5 to 90 tokens), and one padded batch of them ran ~3x the tokens
    it scored, so tails are sorted by length and run in groups padded at most ~30%, each on a copy of the
    cache rows it needs (the last group takes the cache itself)."""
    groups = length_groups([len(tails[q][k]) - 1 for q, k in rest])
    for number, group in enumerate(groups):
        members = [rest[i] for i in group]
        rows_cache = cache if number == len(groups) - 1 else copy.deepcopy(cache)
        _tail_group(engine, decoder, head, rows_cache, prefix_mask, prefixes, tails, members, scores)


def _tail_group(engine, decoder, head, cache, prefix_mask, prefixes, tails, rest, scores) -> None:
    device = engine.device
    feed = [tails[q][k][:-1] for q, k in rest]
    width = max(len(f) for f in feed)
    ids = torch.full((len(rest), width), engine.pad_token_id, dtype=torch.long)
    for row, tokens in enumerate(feed):
        ids[row, :len(tokens)] = torch.tensor(tokens)
    index = torch.tensor([q for q, _ in rest], device=device)
    cache.batch_select_indices(index)
    offsets = torch.tensor([len(prefixes[q]) for q, _ in rest])
    positions = offsets.unsqueeze(1) + torch.arange(width).unsqueeze(0)
    mask = torch.cat([prefix_mask[index.cpu()], torch.ones(len(rest), width, dtype=torch.long)], dim=1)
    hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                     cache=cache, use_cache=True).last_hidden_state
    rows = [r for r, f in enumerate(feed) for _ in f]
    cols = [j for f in feed for j in range(len(f))]
    logprobs = torch.log_softmax(head(hidden[rows, cols]).float(), dim=-1)
    at = 0
    for (q, k), tokens in zip(rest, feed):
        targets = tails[q][k][1:]
        scores[q][k].extend(float(logprobs[at + j, t]) for j, t in enumerate(targets))
        at += len(tokens)


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), right padded: scoring reads each row's positions from its start."""
    ids = torch.full((len(sequences), max(len(s) for s in sequences)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids, mask
