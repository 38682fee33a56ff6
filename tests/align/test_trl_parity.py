"""Our DPO loss equals TRL's DPOTrainer loss on the same model, reference, batch and beta (fp32)."""

from __future__ import annotations

import pytest
import torch

from tests.align.conftest import preference_records


def test_dpo_loss_equals_trl(make_tiny_model, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from llmcycle.train.objectives import Preference, sequence_logps

    policy_dir, ref_dir = make_tiny_model("llama", seed=0), make_tiny_model("llama", seed=1)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32)
    records = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in preference_records(4)]
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.3, per_device_train_batch_size=4, report_to=[],
                     use_cpu=True, dataset_num_proc=None, max_length=128, seed=0)
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=Dataset.from_list(records),
                         processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    policy.eval()
    ref.eval()
    with torch.no_grad():
        theirs = float(trainer.compute_loss(policy, batch))
        ours_batch = {k: batch[k] for k in ("input_ids", "attention_mask", "completion_mask")}
        ref_logps, _ = sequence_logps(ref, ours_batch)
        ours = Preference("dpo", beta=0.3).loss(policy, {**ours_batch, "ref_logps": ref_logps}) / 4
    assert abs(theirs - float(ours)) < 1e-5
    assert abs(theirs - 0.693147) > 1e-3  # policy and reference differ, so the check is not the trivial log 2
