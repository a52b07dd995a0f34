#!/usr/bin/env python3
"""The anchor for srlm's serving figures: HF transformers' batched greedy `generate` on
the same model directory, the same chat prompts (rendered with the model's chat
template) and the same number of new tokens, batch = concurrency. Every sequence is
made to produce exactly --max-new-tokens tokens (min_new_tokens), so tokens/s counts
batch × new tokens over the wall time of one `generate` (one warm-up first). TTFT is
the time of a `generate` with one new token (prefill + first token) at that batch.
Also measures the device's copy bandwidth (a device-to-device copy; bytes read + written).

    hf_bench.py --model DIR --levels 1,8,32,64 --max-new-tokens 128 --out FILE [--device cuda]
"""
import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompts", required=True, help="JSON list of user messages")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    device = args.device if (args.device != "cuda" or torch.cuda.is_available()) else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    result = {"device": device, "dtype": str(dtype), "max_new_tokens": args.max_new_tokens, "levels": []}
    if device == "cuda":
        n = 1 << 30  # 2 GiB of bf16
        a = torch.empty(n, dtype=torch.bfloat16, device="cuda")
        b = torch.empty_like(a)
        a.normal_()
        for _ in range(3):
            b.copy_(a)
        sync()
        t = time.perf_counter()
        for _ in range(10):
            b.copy_(a)
        sync()
        result["copy_bandwidth_bytes_per_s"] = 10 * 2 * a.numel() * a.element_size() / (time.perf_counter() - t)
        del a, b
        torch.cuda.empty_cache()

    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=dtype).to(device).eval()
    result["load_seconds"] = time.perf_counter() - t
    result["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    prompts = json.loads(args.prompts)
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]

    def batch(c):
        rows = [texts[i % len(texts)] for i in range(c)]
        return tok(rows, return_tensors="pt", padding=True, add_special_tokens=False).to(device)

    def generate(enc, new_tokens):
        with torch.inference_mode():
            sync()
            t = time.perf_counter()
            out = model.generate(**enc, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
            sync()
            return time.perf_counter() - t, out

    levels = [int(x) for x in args.levels.split(",") if x]
    generate(batch(min(levels)), 4)  # warm-up
    generate(batch(max(levels)), 4)
    for c in levels:
        enc = batch(c)
        ttft, _ = generate(enc, 1)
        seconds, out = generate(enc, args.max_new_tokens)
        new = (out.shape[1] - enc["input_ids"].shape[1]) * c
        lens = enc["attention_mask"].sum(1).tolist()
        level = {"concurrency": c, "tokens": new, "latency_s": seconds, "ttft_s": ttft, "tokens_per_s": new / seconds,
                 "prompt_tokens_mean": sum(lens) / len(lens), "sample": tok.decode(out[0, enc["input_ids"].shape[1]:][:24])}
        if device == "cuda":
            level["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["levels"].append(level)
        print(json.dumps(level), flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
