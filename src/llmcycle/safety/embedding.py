"""Meaning-level features for the moderation classifier: the sum of a static word-embedding table's rows over a
text's tokens (its direction is the L2-normalised mean embedding), beside the hashed n-grams.

The table is wordllama's `l2_supercat` (MIT): Llama-2 tokenizer pieces, 32,000 x 256, distilled for semantic
similarity and shipped inside the `wordllama` wheel, so nothing is downloaded. Its files are read directly with
`tokenizers` and `safetensors`: importing `wordllama` itself would reconfigure the root logger and its loader
falls back to a Hugging Face download when a file is missing; here a missing file is a `ClassifierError`.

A text's sum is the sum over its whitespace-separated words of each word's own token rows (the tokenizer prefixes
each word with its space mark, so a word's pieces are the same inside a text and alone). So the sum of a text is
the sum of its pieces' when it is cut at a space: a streamed reply adds only its new words, and each word is
tokenized once per process (memo).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
from pathlib import Path

import numpy as np
from safetensors import safe_open
from tokenizers import Tokenizer

from llmcycle.errors import ArtifactError

PACKAGE = "wordllama"
VERSION = "0.4.0.post1"
TABLE = "weights/l2_supercat_256.safetensors"
TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
TENSOR = "embedding.weight"
SPACED = re.compile(r"\S+")


class EmbeddingError(ArtifactError):
    """The word-embedding table the classifier was trained with is missing or not the same table."""


def package_dir() -> Path:
    """Where the wordllama wheel put its files, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingError(f"moderation classifier needs the {PACKAGE} package's embedding table: "
                             f"pip install {PACKAGE}=={VERSION}")
    return Path(list(spec.submodule_search_locations)[0])


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class WordTable:
    """The embedding table, its tokenizer, and a bounded memo of each word's summed rows."""

    LIMIT = 1 << 15  # distinct words whose sums are kept

    def __init__(self, table: np.ndarray, tokenizer: Tokenizer, identity: dict):
        self.table, self.tokenizer, self.identity = table, tokenizer, identity
        self.dim = table.shape[1]
        self.words: dict[str, np.ndarray] = {}

    def word_sums(self, words: list[str]) -> list[np.ndarray]:
        """Each word's summed token rows (new words tokenized in one batch call)."""
        new = [w for w in dict.fromkeys(words) if w not in self.words]
        if new:
            if len(self.words) + len(new) > self.LIMIT:
                self.words.clear()
            for word, encoding in zip(new, self.tokenizer.encode_batch(new, add_special_tokens=False)):
                self.words[word] = self.table[encoding.ids].sum(axis=0)
        memo = self.words
        return [memo[w] if w in memo else self.word_sums([w])[0] for w in words]

    def sum(self, text: str) -> np.ndarray:
        """The sum of the token rows of `text` (zeros for a text without words)."""
        words = SPACED.findall(text)
        if not words:
            return np.zeros(self.dim, np.float32)
        return np.add.reduce(self.word_sums(words), dtype=np.float32)


def expected_identity(directory: Path | None = None) -> dict:
    """What identifies the table: the package version and the sha256 of the table and tokenizer files (the
    classifier's artifact records these and refuses another table)."""
    directory = directory or package_dir()
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"package": PACKAGE, "version": version, "table_sha256": file_sha256(directory / TABLE),
            "tokenizer_sha256": file_sha256(directory / TOKENIZER)}


def load_table(expected: dict | None = None) -> WordTable:
    """Read the table; with `expected` (an artifact's record), refuse a table whose files differ from it."""
    directory = package_dir()
    for name in (TABLE, TOKENIZER):
        if not (directory / name).is_file():
            raise EmbeddingError(f"{directory / name}: embedding file missing (reinstall: pip install "
                                 f"--force-reinstall {PACKAGE}=={VERSION})")
    identity = expected_identity(directory)
    if expected is not None:
        for key in ("table_sha256", "tokenizer_sha256"):
            if identity[key] != expected.get(key):
                raise EmbeddingError(f"{directory / (TABLE if key == 'table_sha256' else TOKENIZER)}: not the "
                                     f"embedding file the moderation classifier was trained with ({PACKAGE} "
                                     f"{identity['version']}, expected {expected.get('version')})")
    try:
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER))
        with safe_open(str(directory / TABLE), framework="np") as handle:
            table = np.ascontiguousarray(handle.get_tensor(TENSOR), dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception, safetensors its own
        raise EmbeddingError(f"{directory}: embedding files unreadable ({type(exc).__name__})") from None
    return WordTable(table, tokenizer, identity)
