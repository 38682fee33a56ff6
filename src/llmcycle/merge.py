"""The `merge` stage: a fine-tuned adapter folded into its base -> a plain model dir any HF tool loads.

The merged dir holds the weights (in the base's own dtype unless asked otherwise), the adapter's tokenizer (with the
chat template it was trained with) and a generation config whose EOS ids are `modeldir.stop_token_ids` (end-of-turn
first), so the merged model stops where the adapter did. Merge then runs the parity check (`llmcycle.parity`) and
refuses to publish a merged model whose logits differ from base + adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import torch
from pydantic import Field

from llmcycle.artifacts import open_artifact
from llmcycle.building import BUILD_LOCK
from llmcycle.config import StageConfig, to_dict
from llmcycle.errors import ArtifactError, ModelLoadError, first_line
from llmcycle.loading import adapter_base, check_exists, is_adapter_dir, load_base_model, load_tokenizer_for
from llmcycle.modeldir import base_dtype_name, write_generation_config
from llmcycle.parity import check_parity
from llmcycle.progress import say
from llmcycle.train.lora import quiet_peft


class MergeConfig(StageConfig):
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = the base model's dtype.")
    parity: bool = Field(True, description="Check merged logits against base + adapter before publishing.")
    parity_tolerance: Optional[float] = Field(None, gt=0, description="Max abs logit diff (None = by dtype).")
    seed: int = 0


def check_adapter_dir(adapter_dir: str | Path) -> str:
    """The adapter's base (hub id or absolute path); one-line errors for anything that is not a usable adapter."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such adapter dir")
    if not is_adapter_dir(path):
        if (path / "config.json").is_file():
            raise ArtifactError(f"{path}: is a full model dir, not an adapter (a full fine-tune needs no merge)")
        raise ArtifactError(f"{path}: not an adapter dir (no adapter_config.json)")
    base = adapter_base(path)
    try:
        check_exists(base)
    except ModelLoadError:
        raise ModelLoadError(f"{path}: the adapter's base model {base} is missing") from None
    return base


def merged_model(adapter_dir: str | Path, base: str, dtype: str):
    """base + adapter with the adapter's deltas folded into the weights, in `dtype`."""
    from peft import PeftModel  # heavy: only merging needs it

    model = load_base_model(base, dtype)
    try:
        with quiet_peft(), BUILD_LOCK:
            model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except Exception as exc:
        raise ModelLoadError(
            f"{adapter_dir}: adapter does not load ({type(exc).__name__}: {first_line(exc)})") from None
    model.config.use_cache = True
    return model


def run(cfg: MergeConfig, adapter_dir: str | Path, out: str | Path) -> Path:
    """The `merge` stage: ADAPTER_DIR (+ its base) -> OUT, a full model dir; parity-checked unless disabled."""
    base = check_adapter_dir(adapter_dir)
    dtype = base_dtype_name(base) if cfg.dtype == "auto" else cfg.dtype
    tokenizer = load_tokenizer_for(adapter_dir)
    torch.manual_seed(cfg.seed)
    with open_artifact(out, "merge", to_dict(cfg), {"adapter": adapter_dir}) as art:
        say(f"merge: folding {adapter_dir} into {base} ({dtype})")
        model = merged_model(adapter_dir, base, dtype)
        model.save_pretrained(art.dir)
        tokenizer.save_pretrained(art.dir)
        write_generation_config(art.dir, tokenizer, model, base=base)
        del model
        art.extra = {"base": base, "dtype": dtype}
        if cfg.parity:
            report = {**check_parity(adapter_dir, art.dir, tolerance=cfg.parity_tolerance), "b": str(out)}
            art.extra["parity"] = report
            art.metrics = {"parity_max_abs_logit_diff": report["max_abs_logit_diff"], "parity_passed": report["passed"]}
            if not report["passed"]:
                raise ArtifactError(f"{out}: merged model fails the parity check ({report['summary']}); not written")
    say(f"merge: wrote {out}")
    return Path(out)
