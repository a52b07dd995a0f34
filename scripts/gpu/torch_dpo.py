#!/usr/bin/env python3
"""A plain PyTorch DPO run beside `srlm bench train`: the same model directory, the same
number and sizes of synthetic pairs (random tokens), the same batch and micro-batch,
f32 weights like srlm's trainer (TF32 off, PyTorch's default for matmuls), AdamW, a
frozen copy of the model as the reference whose log-probs are computed once before the
first step (as srlm does), loss −log σ(β·Δ) over answer-token log-prob sums, gradient
clipping at norm 1. Tokens/s counts prompt + answer of both sequences of every pair over
the whole run, the reference pass included (srlm's `tokens_per_second`).

    torch_dpo.py --model DIR --pairs 16 --prompt-len 128 --answer-len 128 --batch-size 16 --micro-batch 4 --out FILE
"""
import argparse
import copy
import json
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--answer-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from transformers import LlamaForCausalLM

    device = args.device if (args.device != "cuda" or torch.cuda.is_available()) else "cpu"
    dtype = torch.float32 if args.dtype == "f32" else torch.bfloat16
    cuda = device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    t_load = time.perf_counter()
    policy = LlamaForCausalLM.from_pretrained(args.model, dtype=dtype).to(device)
    policy.config.use_cache = False
    reference = copy.deepcopy(policy).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    policy.train()
    load_seconds = time.perf_counter() - t_load
    vocab = policy.config.vocab_size
    g = torch.Generator().manual_seed(7)
    P, A = args.prompt_len, args.answer_len
    prompts = torch.randint(0, vocab, (args.pairs, P), generator=g)
    chosen = torch.randint(0, vocab, (args.pairs, A), generator=g)
    rejected = torch.randint(0, vocab, (args.pairs, A), generator=g)

    def answer_logps(model, idx):
        """Sum of answer-token log-probs of chosen and rejected for the pairs `idx`."""
        seqs = torch.cat([torch.cat([prompts[idx], chosen[idx]], 1), torch.cat([prompts[idx], rejected[idx]], 1)], 0).to(device)
        logits = model(input_ids=seqs).logits[:, P - 1:-1].float()
        logp = torch.gather(F.log_softmax(logits, -1), 2, seqs[:, P:].unsqueeze(-1)).squeeze(-1).sum(-1)
        n = len(idx)
        return logp[:n], logp[n:]

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    ref_c, ref_r = [], []
    with torch.no_grad():
        for s in range(0, args.pairs, args.micro_batch):
            idx = list(range(s, min(s + args.micro_batch, args.pairs)))
            c, r = answer_logps(reference, idx)
            ref_c.append(c)
            ref_r.append(r)
    ref_c, ref_r = torch.cat(ref_c), torch.cat(ref_r)
    sync()
    t_ref = time.perf_counter() - t0
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)
    steps, losses = 0, []
    t1 = time.perf_counter()
    for b in range(0, args.pairs, args.batch_size):
        batch = list(range(b, min(b + args.batch_size, args.pairs)))
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for s in range(0, len(batch), args.micro_batch):
            idx = batch[s:s + args.micro_batch]
            c, r = answer_logps(policy, idx)
            margin = (c - ref_c[idx]) - (r - ref_r[idx])
            loss = -F.logsigmoid(args.beta * margin).sum() / len(batch)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        steps += 1
        losses.append(total)
    sync()
    t_train = time.perf_counter() - t1
    seconds = time.perf_counter() - t0
    tokens = args.pairs * (2 * P + 2 * A)
    params = sum(p.numel() for p in policy.parameters())
    result = {
        "engine": f"PyTorch {torch.__version__} autograd, {args.dtype}, AdamW",
        "parameters": params, "pairs": args.pairs, "tokens_per_pair": 2 * P + 2 * A, "batch_size": args.batch_size,
        "micro_batch": args.micro_batch, "optimizer_steps": steps, "seconds": seconds, "reference_seconds": t_ref,
        "load_seconds": load_seconds, "tokens_per_second": tokens / seconds, "train_tokens_per_second": tokens / t_train,
        "losses": losses, "device": device,
        "torch_peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "torch_peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
    }
    print(json.dumps(result))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
