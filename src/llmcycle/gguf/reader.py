"""Read and check a GGUF file before anything is loaded: a corrupt or truncated file, an architecture we do not
import or a quant type nobody can dequantize is one line naming the file, not a traceback from deep inside."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmcycle.errors import first_line
from llmcycle.gguf import GGUFError

IMPORT_ARCHS = ("llama", "mistral", "qwen2")  # what transformers dequantizes and our engine runs
MAGIC = b"GGUF"


@dataclass
class GGUFInfo:
    path: Path
    arch: str
    metadata: dict[str, Any] = field(default_factory=dict)  # scalar fields only (no token lists)
    tensor_types: dict[str, int] = field(default_factory=dict)  # quant type name -> tensor count
    n_tensors: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


def _scalar_fields(reader) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, fld in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and name.endswith(("tokens", "token_type", "merges", "scores")):
            continue
        try:
            out[name] = fld.contents()
        except Exception:  # a field the reader cannot decode is not one we need
            continue
    return out


def _open(path: Path):
    from gguf import GGUFReader

    with open(path, "rb") as fh:
        if fh.read(4) != MAGIC:
            raise GGUFError(f"{path}: not a GGUF file (bad magic bytes)")
    try:
        return GGUFReader(path, "r")
    except Exception as exc:  # struct/numpy/value errors on a damaged header or tensor table
        raise GGUFError(f"{path}: corrupt or truncated GGUF ({type(exc).__name__}: {first_line(exc)})") from None


def _check_tensors(path: Path, reader) -> dict[str, int]:
    """Every tensor lies inside the file and has a type the gguf package can dequantize."""
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    known = set(getattr(quants, "_type_traits", {})) | {T.F32, T.F16}
    size = path.stat().st_size
    counts: dict[str, int] = {}
    for tensor in reader.tensors:
        if int(tensor.data_offset) + int(tensor.n_bytes) > size:
            raise GGUFError(f"{path}: truncated GGUF (tensor {tensor.name} runs past the end of the file)")
        if tensor.tensor_type not in known:
            raise GGUFError(f"{path}: tensor {tensor.name} has quant type {tensor.tensor_type.name}, "
                            "which cannot be dequantized")
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
    return counts


def read_gguf(path: str | Path) -> GGUFInfo:
    """Header, metadata and tensor table of a GGUF file, checked."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GGUFError(f"{path}: no such GGUF file")
    reader = _open(path)
    metadata = _scalar_fields(reader)
    arch = str(metadata.get("general.architecture", ""))
    if not arch:
        raise GGUFError(f"{path}: GGUF has no general.architecture")
    if arch not in IMPORT_ARCHS:
        raise GGUFError(f"{path}: GGUF architecture {arch!r} is not supported (supported: {', '.join(IMPORT_ARCHS)})")
    if "tokenizer.ggml.tokens" not in reader.fields:
        raise GGUFError(f"{path}: GGUF holds no tokenizer (tokenizer.ggml.tokens)")
    counts = _check_tensors(path, reader)
    return GGUFInfo(path=path, arch=arch, metadata=metadata, tensor_types=counts, n_tensors=len(reader.tensors))
