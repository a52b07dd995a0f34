#!/usr/bin/env python3
"""Writes a Llama-shaped model with random weights as an HF directory that `srlm serve
--model DIR` (mistralrs or native), `srlm train` and transformers all load:
model.safetensors, config.json (with the keys mistralrs' Llama loader requires:
top-level rope_theta, rope_scaling null), generation_config.json and the default
model's tokenizer files (tokenizer.json, tokenizer_config.json with its chat template).

Random init is transformers' (normal, std 0.02). With --sharpen-steps N the weights
then take up to N AdamW steps of next-token training on the repository's own chat data
(data/*.jsonl), so that greedy decoding picks tokens by clear margins instead of among
the near-ties of a random model (whose top-2 logits often differ by less than bf16
rounding moves them): a concurrent-vs-solo equality test then tests batching, not
rounding. A probe every 10 steps (greedy answers to 8 prompts) keeps the weights whose
answers differ most between prompts with the fewest near-ties. Two models made with
different --seed differ in every weight.

    make_model.py --out DIR --tokenizer TOKDIR [--shape 1b|tiny] [--seed N]
                  [--sharpen-steps N] [--also DIR2:SEED2] [--device cuda|cpu] [--dtype bf16|f32]
Prints one JSON line per model written.
"""
import argparse
import glob
import json
import os
import shutil
import sys
import time

SHAPES = {
    # Llama-3.2-1B's body with SmolLM2's vocabulary: 1.07 B parameters (tied embeddings).
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8),
    # For dry runs on a CPU.
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
}
VOCAB = 49152
ROPE_THETA = 10000.0
RMS_EPS = 1e-5
CONTEXT = 8192


def chat_texts(repo, template_tokenizer, limit=4000):
    """Chat-formatted texts from the repository's JSONL data (messages or prompt/answer)."""
    texts = []
    for path in sorted(glob.glob(os.path.join(repo, "data", "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                messages = row.get("messages")
                prompt = row.get("prompt", row.get("question"))
                if not messages and isinstance(prompt, str):
                    messages = [{"role": "user", "content": prompt}]
                    for key in ("response", "answer", "chosen", "output"):
                        if isinstance(row.get(key), str):
                            messages.append({"role": "assistant", "content": row[key]})
                            break
                if not messages or not all(isinstance(m.get("content"), str) for m in messages):
                    continue
                try:
                    texts.append(template_tokenizer.apply_chat_template(messages, tokenize=False))
                except Exception:
                    texts.append("\n".join(m["content"] for m in messages))
                if len(texts) >= limit:
                    return texts
    return texts


PROBE_PROMPTS = [
    "Why is the sky blue?", "List three uses of baking soda.", "What is 17 times 23?", "Name a planet.",
    "Write a short poem about a lighthouse keeper.", "How do I keep basil alive?",
    "Explain recursion to a ten-year-old.", "Describe the water cycle in one sentence each step.",
]


def probe(model, tokenizer, device, new_tokens=16):
    """Greedy answers to a few chat prompts: how many differ, and the top-1 − top-2
    log-prob gaps of their tokens (small gaps: near-ties that rounding can flip)."""
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in PROBE_PROMPTS]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
    gaps = []
    for scores in out.scores:
        top = torch.log_softmax(scores.float(), -1).topk(2, -1).values
        gaps.extend((top[:, 0] - top[:, 1]).tolist())
    gaps.sort()
    answers = [tokenizer.decode(row[enc["input_ids"].shape[1]:]) for row in out.sequences]
    return {"distinct": len(set(answers)), "of": len(answers), "gap_p10": gaps[len(gaps) // 10], "gap_median": gaps[len(gaps) // 2],
            "near_ties_below_0.05": sum(g < 0.05 for g in gaps) / len(gaps), "sample": answers[0][:60]}


def score(p):
    """Prefer answers that differ between prompts (mix-ups show), then fewer near-ties."""
    return (p["distinct"] >= max(2, (3 * p["of"]) // 4), -p["near_ties_below_0.05"], p["gap_p10"])


def sharpen(model, tokenizer, repo, steps, device, seq=256, batch=16, lr=3e-4, probe_every=10):
    """A few AdamW steps of next-token training on the repository's chat data; the
    weights kept are those of the probe point (every `probe_every` steps, and the start)
    whose greedy answers differ most between prompts and have the fewest near-ties."""
    import torch

    texts = chat_texts(repo, tokenizer)
    if not texts:
        print("sharpen: no training text found under data/; skipped", file=sys.stderr)
        return {"steps": 0}
    ids = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
    data = torch.tensor(ids, dtype=torch.long)
    n = (len(data) - seq) // seq
    if n < 1:
        return {"steps": 0}
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    history = []
    best = None
    t0 = time.time()
    loss_value = None
    losses = []
    for step in range(steps + 1):
        if step % probe_every == 0 or step == steps:
            model.eval()
            p = probe(model, tokenizer, device)
            p.update({"step": step, "loss": loss_value})
            history.append(p)
            print(json.dumps({"probe": p}), file=sys.stderr, flush=True)
            if best is None or score(p) > score(best[0]):
                best = (p, {k: v.detach().clone() for k, v in model.state_dict().items()})
            model.train()
        if step == steps:
            break
        rows = torch.randint(0, n, (batch,), generator=g)
        x = torch.stack([data[r * seq:(r + 1) * seq] for r in rows.tolist()]).to(device)
        loss = model(input_ids=x, labels=x, use_cache=False).loss  # the model shifts the labels
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_value = loss.item()
        losses.append(loss_value)
    del opt
    model.load_state_dict(best[1])
    model.eval()
    return {"steps": steps, "kept_step": best[0]["step"], "kept": best[0], "tokens": len(ids),
            "first_loss": losses[0] if losses else None, "last_loss": loss_value,
            "seconds": round(time.time() - t0, 1), "history": history}


def make(args, out, seed, sharpen_steps, torch, save_file, AutoTokenizer, LlamaConfig, LlamaForCausalLM):
    t0 = time.time()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    shape = SHAPES[args.shape]
    tok_cfg = json.load(open(os.path.join(args.tokenizer, "tokenizer_config.json")))
    gen_cfg = json.load(open(os.path.join(args.tokenizer, "generation_config.json")))
    bos, eos = gen_cfg.get("bos_token_id", 1), gen_cfg.get("eos_token_id", 2)
    config = LlamaConfig(
        vocab_size=VOCAB, max_position_embeddings=CONTEXT, rms_norm_eps=RMS_EPS, rope_theta=ROPE_THETA,
        tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos, hidden_act="silu", **shape,
    )
    torch.manual_seed(seed)
    with torch.device(args.device):
        model = LlamaForCausalLM(config)
    model = model.to(dtype)  # bf16 AdamW for a few sharpening steps is enough
    params = sum(p.numel() for p in model.parameters())
    sharpened = {"steps": 0}
    if sharpen_steps > 0:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        sharpened = sharpen(model, tokenizer, args.repo, sharpen_steps, args.device)

    os.makedirs(out, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    state.pop("lm_head.weight", None)  # tied to model.embed_tokens.weight
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    hf = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "vocab_size": VOCAB,
        "max_position_embeddings": CONTEXT,
        "rms_norm_eps": RMS_EPS,
        "rope_theta": ROPE_THETA,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "tie_word_embeddings": True,
        "attention_bias": False,
        "mlp_bias": False,
        "head_dim": shape["hidden_size"] // shape["num_attention_heads"],
        "bos_token_id": bos,
        "eos_token_id": eos,
        "initializer_range": 0.02,
        "torch_dtype": "bfloat16" if dtype == torch.bfloat16 else "float32",
        "dtype": "bfloat16" if dtype == torch.bfloat16 else "float32",
        "use_cache": True,
        **shape,
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        src = os.path.join(args.tokenizer, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(out, name))
    weight_bytes = sum(v.numel() * v.element_size() for v in state.values())
    result = {
        "out": out, "shape": args.shape, "seed": seed, "parameters": params, "weight_bytes": weight_bytes,
        "dtype": args.dtype, "device": args.device, "sharpen": sharpened, "seconds": round(time.time() - t0, 2),
        "chat_template": bool(tok_cfg.get("chat_template")),
    }
    print(json.dumps(result), flush=True)
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", required=True, help="directory with tokenizer.json and tokenizer_config.json")
    ap.add_argument("--shape", default="1b", choices=sorted(SHAPES))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sharpen-steps", type=int, default=0)
    ap.add_argument("--also", action="append", default=[], metavar="DIR:SEED",
                    help="another model of the same shape with this seed (not sharpened), in the same process")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--repo", default=os.getcwd())
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if args.device == "cuda" and not torch.cuda.is_available():
        print("make_model: CUDA not available; using the CPU", file=sys.stderr)
        args.device = "cpu"
    libs = (torch, save_file, AutoTokenizer, LlamaConfig, LlamaForCausalLM)
    make(args, args.out, args.seed, args.sharpen_steps, *libs)
    for spec in args.also:
        out, seed = spec.rsplit(":", 1)
        make(args, out, int(seed), 0, *libs)


if __name__ == "__main__":
    main()
