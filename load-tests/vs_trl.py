"""TRL's side of load-tests/vs-trl.sh: DPO with TRL's `DPOTrainer` on the workload of
`srlm bench train` (src/bench/train.rs), printing one JSON line in the same shape.

    python vs_trl.py convert GGUF DIR     # once: the GGUF dequantized to f32, saved as an HF folder
    python vs_trl.py train DIR --pairs 16 --prompt-len 128 --answer-len 128 --out FILE.json
    python vs_trl.py versions             # Python's and the packages', as JSON

The pairs are random token ids (fixed seed), handed to the trainer already tokenized:
`prompt_ids`, `chosen_ids` and `rejected_ids` are the columns TRL's own tokenizing step
produces and its collator (`DataCollatorForPreference`) reads, so that step is skipped
(see `Pretokenized`) and every sequence is exactly prompt + answer tokens, with no EOS
added, no chat template, no truncation (`max_length=None`) and no padding (micro-batches
of equal lengths). `train` checks the collated shapes before it times anything.

Settings are srlm's where TRL has them: full fine-tuning in f32 (no bf16 autocast, no
gradient checkpointing: TRL turns both on by default, srlm does neither), sigmoid loss
with beta 0.1, reference model = a second copy of the weights (TRL's default), AdamW at
lr 1e-6 (srlm's and TRL's default for DPO), gradient-norm clip 1.0, one optimizer step
per --batch-size pairs, --micro-batch pairs per forward/backward. CPU only, every core.
Only `trainer.train()` is timed; peak RSS is the whole process's (Python, torch, both
copies of the model), as srlm's is its whole process's.
"""

import argparse
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path


def gib(kib: int) -> float:
    return kib / (1 << 20)


def peak_rss_kib() -> int:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def versions() -> dict:
    out = {"python": platform.python_version()}
    for package in ("torch", "transformers", "trl", "accelerate", "datasets", "gguf"):
        out[package] = metadata.version(package)
    return out


def convert(args: argparse.Namespace) -> None:
    """The GGUF, dequantized by transformers' GGUF reader to f32, saved as an HF folder
    (model and tokenizer). Written beside DIR and renamed, so a folder that exists is whole."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(args.gguf).resolve(), Path(args.dir)
    if (out / "config.json").exists():
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # For Llama, transformers' GGUF loader unpacks every tensor into a plain dense
        # weight but leaves a GGUF quantizer attached as a marker, which refuses to save
        # or train. With nothing left packed, the marker is all there is to drop.
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            assert not getattr(quantizer, "packed_modules", None), "weights left in GGUF blocks"
            quantizer.remove_quantization_config(model)
        assert all(p.dtype == torch.float32 for p in model.parameters()), "not all weights are f32"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "srlm-source.txt").write_text(f"{gguf}\n{json.dumps(versions())}\n")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"converted {gguf} to {out}", file=sys.stderr)


def train(args: argparse.Namespace) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    class Pretokenized(DPOTrainer):
        """DPOTrainer whose dataset preparation (prompt extraction, EOS, tokenizing) is
        skipped: the dataset already holds what that step would output."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)

    tokenizer = AutoTokenizer.from_pretrained(args.dir)
    # Loaded from the folder, so TRL builds the reference model from the same path.
    model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.float32)
    vocab = model.config.vocab_size
    params = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)

    generator = torch.Generator().manual_seed(args.seed)

    def tokens(n: int) -> list[int]:
        return torch.randint(0, vocab, (n,), generator=generator).tolist()

    pairs = [
        {"prompt_ids": tokens(args.prompt_len), "chosen_ids": tokens(args.answer_len), "rejected_ids": tokens(args.answer_len)}
        for _ in range(args.pairs)
    ]
    dataset = Dataset.from_list(pairs)

    # One optimizer step per --batch-size pairs (fewer when there are fewer pairs, as srlm).
    per_step = min(args.batch_size, args.pairs)
    accumulation = math.ceil(per_step / args.micro_batch)
    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="srlm-vs-trl."),
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=1,
        learning_rate=1e-6,
        max_grad_norm=1.0,
        weight_decay=0.0,
        beta=0.1,
        loss_type=["sigmoid"],
        max_length=None,
        precompute_ref_log_probs=False,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
    )
    trainer = Pretokenized(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)  # its dict of metrics on stdout; ours is the one JSON line

    # What the model will see: one micro-batch, collated as in training.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(min(args.micro_batch, args.pairs))])
    rows = 2 * min(args.micro_batch, args.pairs)
    want = (rows, args.prompt_len + args.answer_len)
    assert tuple(batch["input_ids"].shape) == want, f"collated {tuple(batch['input_ids'].shape)}, expected {want}"
    assert int(batch["attention_mask"].sum()) == rows * want[1], "padding in a micro-batch"
    assert int(batch["completion_mask"].sum()) == rows * args.answer_len, "completion tokens differ"
    assert trainer.ref_model is not None, "no reference model"

    rss_before = peak_rss_kib()
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    rss_after = peak_rss_kib()
    shutil.rmtree(config.output_dir, ignore_errors=True)

    total_tokens = args.pairs * 2 * (args.prompt_len + args.answer_len)
    out = {
        "trainer": "trl DPOTrainer",
        "mode": "full",
        "model": args.dir,
        "parameters": params,
        "trained_parameters": trained,
        "pairs": args.pairs,
        "tokens_per_pair": 2 * (args.prompt_len + args.answer_len),
        "batch_size": args.batch_size,
        "micro_batch": args.micro_batch,
        "gradient_accumulation_steps": accumulation,
        "optimizer_steps": trainer.state.global_step,
        "seconds": seconds,
        "seconds_per_pair": seconds / max(args.pairs, 1),
        "tokens_per_second": total_tokens / seconds,
        "loss": result.training_loss,
        "peak_rss_gib_before_training": gib(rss_before),
        "peak_rss_gib": gib(rss_after),
        "rss_note": "whole process: Python, torch, policy and reference model",
        "threads": torch.get_num_threads(),
        "device": str(trainer.accelerator.device),
        "optim": getattr(config.optim, "value", str(config.optim)),
        "dtype": str(model.dtype),
        "versions": versions(),
    }
    print(json.dumps(out))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="dequantize a GGUF to an f32 HF folder (once)")
    c.add_argument("gguf")
    c.add_argument("dir")
    t = sub.add_parser("train", help="DPO on synthetic pairs; one JSON line")
    t.add_argument("dir", help="HF folder from `convert`")
    t.add_argument("--pairs", type=int, default=16)
    t.add_argument("--prompt-len", type=int, default=128)
    t.add_argument("--answer-len", type=int, default=128)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--micro-batch", type=int, default=1)
    t.add_argument("--seed", type=int, default=7)
    t.add_argument("--out")
    sub.add_parser("versions", help="the versions of Python and the packages, as JSON")
    args = parser.parse_args()
    if args.command == "versions":
        print(json.dumps(versions()))
    else:
        {"convert": convert, "train": train}[args.command](args)


if __name__ == "__main__":
    main()
