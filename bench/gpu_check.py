"""One prepared GPU check: what llmcycle's training and decoding reach on one accelerator, in at most 8 minutes.

Nothing is downloaded: models are random-initialised in-process at real shapes from transformers configs, so the
numbers are about speed and memory, never quality. Sections (each time-boxed and failure-isolated: a section that
fails records its error in the JSON and the others still run):

- pretrain: bf16-autocast training of the `large` Llama preset; tokens/s and MFU = 6·N·T / the GPU's dense bf16 peak
  (N = parameters in matmuls, H100 SXM 989 TFLOP/s; the datasheet peak of the detected card, else a measured one);
- lora / qlora: peak memory and tokens/s of LoRA and 4-bit QLoRA (bitsandbytes, skipped when missing) training on a
  Phi-3-mini-4k-shaped model (3.8B, Phi3Config at the published shapes);
- decode: llmcycle's engine (`llmcycle.infer.engine.Engine`) greedy decode tok/s at batch 1 and 32.

    python bench/gpu_check.py                   # on the GPU machine -> bench/results/gpu_check.json
    python bench/gpu_check.py --smoke --out X   # the same code paths on CPU at toy shapes, in seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"
# dense bf16 tensor-core peaks (FLOP/s) from the datasheets, matched against torch.cuda.get_device_name()
DATASHEET_BF16 = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("L40S", 362e12),
                  ("A10G", 70e12), ("L4", 121e12))


@dataclass
class Shapes:
    """Everything that differs between the real check and `--smoke`."""

    device: str
    preset: str
    vocab: int
    train_batch: int
    train_seq: int
    train_steps: int
    phi3: dict[str, Any]
    lora_batch: int
    lora_seq: int
    lora_steps: int
    decode_prompt: int
    decode_new: int
    decode_batches: tuple[int, ...]
    section_s: float


PHI3_MINI_4K = dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                    original_max_position_embeddings=4096, rope_theta=10000.0, sliding_window=2047,
                    tie_word_embeddings=False, bos_token_id=1, eos_token_id=32000, pad_token_id=32000)
PHI3_TOY = dict(PHI3_MINI_4K, vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=4, eos_token_id=2, pad_token_id=2, bos_token_id=1)

FULL = Shapes(device="cuda", preset="large", vocab=32000, train_batch=8, train_seq=2048, train_steps=30,
              phi3=PHI3_MINI_4K, lora_batch=4, lora_seq=1024, lora_steps=15, decode_prompt=32, decode_new=128,
              decode_batches=(1, 32), section_s=100.0)
SMOKE = Shapes(device="cpu", preset="tiny", vocab=512, train_batch=2, train_seq=32, train_steps=3, phi3=PHI3_TOY,
               lora_batch=2, lora_seq=32, lora_steps=2, decode_prompt=8, decode_new=4, decode_batches=(1, 4),
               section_s=30.0)


class Clock:
    """A section's time box: loops stop early (and say so) once it is spent."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def spent(self) -> bool:
        return time.perf_counter() > self.deadline


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_bf16(device: str) -> tuple[float, str]:
    """(peak dense bf16 FLOP/s, where the number comes from)."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        for key, flops in DATASHEET_BF16:
            if key in name:
                return flops, f"datasheet ({key})"
    from llmcycle.train.mfu import measured_peak_flops

    return measured_peak_flops(device, torch.bfloat16, size=256), "measured bf16 matmul (256², a rough CPU peak)"


def environment(shapes: Shapes) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "device": shapes.device,
                           "cpu_count": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    for pkg in ("transformers", "peft", "accelerate", "bitsandbytes"):
        spec = importlib.util.find_spec(pkg)
        env[pkg] = __import__(pkg).__version__ if spec is not None else None
    if shapes.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda)
    return env


def reset_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def random_batch(vocab: int, batch: int, seq: int, device: str) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, vocab, (batch, seq), device=device)
    return {"input_ids": ids, "labels": ids}


def timed_training(model: Any, params: list, shapes: Shapes, vocab: int, batch: int, seq: int, steps: int,
                   clock: Clock) -> dict[str, Any]:
    """AdamW steps under bf16 autocast; the first step (allocation, kernel choice) is not timed."""
    fused = shapes.device.startswith("cuda")
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=fused)
    data = random_batch(vocab, batch, seq, shapes.device)
    times, losses = [], []
    for step in range(steps + 1):
        sync(shapes.device)
        start = time.perf_counter()
        with torch.autocast(shapes.device.split(":")[0], dtype=torch.bfloat16):
            loss = model(**data).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(shapes.device)
        if step:
            times.append(time.perf_counter() - start)
        losses.append(round(float(loss.detach()), 4))
        if clock.spent() and len(times) >= 1:
            break
    times.sort()
    median = times[len(times) // 2]
    return {"batch": batch, "seq": seq, "timed_steps": len(times), "step_s_median": round(median, 4),
            "step_s_min": round(times[0], 4), "tokens_per_s": round(batch * seq / median, 1),
            "loss_first_last": [losses[0], losses[-1]], "stopped_by_time_box": len(times) < steps}


def pretrain(shapes: Shapes, clock: Clock) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from llmcycle.models import llama_config
    from llmcycle.train.mfu import count_params

    cfg = llama_config(shapes.preset, shapes.vocab, 1, 2, 0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="sdpa").to(shapes.device)
    total, matmul, _ = count_params(model)
    out = timed_training(model, list(model.parameters()), shapes, shapes.vocab, shapes.train_batch, shapes.train_seq,
                         shapes.train_steps, clock)
    peak, source = peak_bf16(shapes.device)
    out.update(preset=shapes.preset, params=total, matmul_params=matmul, precision="fp32 weights, bf16 autocast",
               optimizer="AdamW (fused on CUDA)", peak_flops=peak, peak_source=source,
               mfu=round(6 * matmul * out["tokens_per_s"] / peak, 4), peak_memory_gib=peak_memory_gib(shapes.device))
    return out


def phi3_model(shapes: Shapes) -> Any:
    """The Phi-3-mini-shaped model built directly on the device in bf16 (no 15 GB fp32 copy on the host)."""
    from transformers import AutoModelForCausalLM, Phi3Config

    torch.manual_seed(0)
    with torch.device(shapes.device):
        return AutoModelForCausalLM.from_config(Phi3Config(**shapes.phi3), dtype=torch.bfloat16,
                                                attn_implementation="sdpa")


def adapter_run(model: Any, method: str, shapes: Shapes, clock: Clock) -> dict[str, Any]:
    from llmcycle.train.lora import count_parameters, wrap_with_adapter

    wrapped = wrap_with_adapter(model, method, r=16, alpha=32, dropout=0.0, targets="auto")
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    out = timed_training(wrapped, trainable, shapes, shapes.phi3["vocab_size"], shapes.lora_batch, shapes.lora_seq,
                         shapes.lora_steps, clock)
    out.update(count_parameters(wrapped), method=method, rank=16, targets="llmcycle's phi3 defaults",
               peak_memory_gib=peak_memory_gib(shapes.device))
    return out


def lora(shapes: Shapes, clock: Clock) -> dict[str, Any]:
    reset_memory(shapes.device)
    return adapter_run(phi3_model(shapes), "lora", shapes, clock)


def qlora(shapes: Shapes, clock: Clock) -> dict[str, Any]:
    """The random model is saved once and reloaded in 4-bit NF4, the way a real base is loaded for QLoRA."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return {"skipped": "bitsandbytes missing"}
    if not shapes.device.startswith("cuda"):
        return {"skipped": "QLoRA needs a CUDA GPU"}
    from transformers import AutoModelForCausalLM

    from llmcycle.train.lora import quantization_config

    with tempfile.TemporaryDirectory() as tmp:
        model = phi3_model(shapes)
        model.save_pretrained(tmp)
        del model
        reset_memory(shapes.device)
        model = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=quantization_config(torch.bfloat16),
                                                     dtype=torch.bfloat16, device_map={"": 0})
    return adapter_run(model, "qlora", shapes, clock)


def word_tokenizer(vocab: int) -> Any:
    """A word-level tokenizer of `vocab` entries built in-process (the engine needs one for ids and stop tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    inner = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    inner.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=inner, unk_token="w0", bos_token="w1", eos_token="w2",
                                   pad_token="w0")


def decode(shapes: Shapes, clock: Clock) -> dict[str, Any]:
    """Engine(model, tokenizer) on a random `large` preset in bf16; every row decodes exactly decode_new tokens."""
    from transformers import AutoModelForCausalLM

    from llmcycle.infer.engine import Engine
    from llmcycle.infer.settings import GenerationSettings
    from llmcycle.models import llama_config

    torch.manual_seed(0)
    cfg = llama_config(shapes.preset, shapes.vocab, 1, 2, 0)
    dtype = torch.bfloat16 if shapes.device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa").to(shapes.device)
    engine = Engine(model, word_tokenizer(shapes.vocab))
    settings = GenerationSettings(max_new_tokens=shapes.decode_new, min_new_tokens=shapes.decode_new,
                                  do_sample=False)
    out: dict[str, Any] = {"backend": engine.backend_name, "dtype": str(dtype), "prompt_tokens": shapes.decode_prompt,
                           "new_tokens": shapes.decode_new}
    for batch in shapes.decode_batches:
        prompts = torch.randint(3, shapes.vocab, (batch, shapes.decode_prompt)).tolist()
        engine.generate_ids(prompts[:1], settings.replace(max_new_tokens=2, min_new_tokens=2), batch_size=batch)
        sync(shapes.device)
        start = time.perf_counter()
        done = engine.generate_ids(prompts, settings, batch_size=batch)
        sync(shapes.device)
        seconds = time.perf_counter() - start
        tokens = sum(c.completion_tokens for c in done)
        out[f"batch_{batch}"] = {"tokens": tokens, "seconds": round(seconds, 3), "tok_per_s": round(tokens / seconds, 1)}
        if clock.spent():
            break
    return out


SECTIONS: dict[str, Callable[[Shapes, Clock], dict[str, Any]]] = {
    "pretrain": pretrain, "lora": lora, "qlora": qlora, "decode": decode}


def run_section(name: str, shapes: Shapes) -> dict[str, Any]:
    """One section, isolated: its error (and where it happened) is the section's result, not the script's end."""
    reset_memory(shapes.device)
    start = time.perf_counter()
    try:
        result = SECTIONS[name](shapes, Clock(shapes.section_s))
    except Exception as exc:  # one section failing (OOM, missing kernel) must not lose the others' numbers
        tail = traceback.format_exc().strip().splitlines()[-4:]
        result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                  "where": tail}
    result["wall_s"] = round(time.perf_counter() - start, 2)
    if shapes.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, toy shapes, seconds: checks the code paths")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json")
    parser.add_argument("--only", nargs="*", choices=list(SECTIONS), help="run only these sections")
    args = parser.parse_args(argv)
    shapes = SMOKE if args.smoke else FULL
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible: run with --smoke for the CPU check of the code paths")
    report: dict[str, Any] = {"mode": "smoke" if args.smoke else "gpu", "env": environment(shapes), "sections": {}}
    for name in args.only or list(SECTIONS):
        report["sections"][name] = run_section(name, shapes)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after each section: a kill keeps what finished
        print(f"{name}: {json.dumps(report['sections'][name])}", flush=True)
    return report


if __name__ == "__main__":
    main()
