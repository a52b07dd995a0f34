#!/usr/bin/env python3
"""Writes an HF tokenizer (tokenizer.json, tokenizer_config.json with the chat
template, special_tokens_map.json, generation_config.json) from a GGUF file's
byte-level BPE vocabulary, the way srlm's own src/engine/tokenizer.rs builds it:
BPE over the file's tokens and merges, GPT-2 byte-level pre-tokenizer (preceded by
a split of every digit for `tokenizer.ggml.pre = smollm`), control tokens (type 3)
matched whole. Standard library only.

    tokenizer_from_gguf.py MODEL.gguf OUT_DIR
"""
import json
import os
import struct
import sys

# GGUF metadata value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}


def read_metadata(path):
    """The GGUF file's metadata key/values (tensor infos are not read)."""
    with open(path, "rb") as f:
        data = f.read(64 << 20)  # metadata of a small model fits; tensors follow it
    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize(fmt)
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += size
        return value

    def string():
        nonlocal pos
        n = take("<Q")
        s = data[pos:pos + n].decode("utf-8", errors="surrogateescape")
        pos += n
        return s

    def value(kind):
        if kind == STRING:
            return string()
        if kind == ARRAY:
            item, n = take("<I"), take("<Q")
            if item in SCALAR:
                fmt = SCALAR[item]
                size = struct.calcsize(fmt)
                nonlocal pos
                out = list(struct.unpack_from("<%d%s" % (n, fmt[1]), data, pos))
                pos += n * size
                return out
            return [value(item) for _ in range(n)]
        return take(SCALAR[kind])

    if data[:4] != b"GGUF":
        sys.exit(f"{path}: not a GGUF file")
    pos = 4
    version = take("<I")
    if version < 2:
        sys.exit(f"{path}: GGUF version {version} is not supported")
    take("<Q")  # tensor count
    kv_count = take("<Q")
    md = {}
    for _ in range(kv_count):
        key = string()
        md[key] = value(take("<I"))
    return md


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    md = read_metadata(src)
    model = md.get("tokenizer.ggml.model", "gpt2")
    if model != "gpt2":
        sys.exit(f"{src}: tokenizer model {model!r} is not byte-level BPE")
    tokens = md["tokenizer.ggml.tokens"]
    merges = md["tokenizer.ggml.merges"]
    types = md.get("tokenizer.ggml.token_type", [1] * len(tokens))
    pre = md.get("tokenizer.ggml.pre", "default")
    bos = md.get("tokenizer.ggml.bos_token_id")
    eos = md.get("tokenizer.ggml.eos_token_id")
    unk = md.get("tokenizer.ggml.unknown_token_id")
    pad = md.get("tokenizer.ggml.padding_token_id")
    template = md.get("tokenizer.chat_template")
    context = md.get("llama.context_length", 8192)

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    pre_tokenizer = byte_level
    if pre == "smollm":
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    control = [i for i, t in enumerate(types) if t == 3]
    added = [{"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in control]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": merges,
        },
    }
    name = lambda i: tokens[i] if i is not None and 0 <= i < len(tokens) else None
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
        "bos_token": name(bos),
        "eos_token": name(eos),
        "unk_token": name(unk),
        "pad_token": name(pad) or name(eos),
        "additional_special_tokens": [tokens[i] for i in control],
        "chat_template": template,
        "clean_up_tokenization_spaces": False,
        "model_max_length": context,
        "tokenizer_class": "GPT2Tokenizer",
        "vocab_size": len(tokens),
    }
    config = {k: v for k, v in config.items() if v is not None}
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if k in config}
    generation = {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad if pad is not None else eos}
    generation = {k: v for k, v in generation.items() if v is not None}
    os.makedirs(out, exist_ok=True)
    for file, obj in [("tokenizer.json", tokenizer), ("tokenizer_config.json", config),
                      ("special_tokens_map.json", special), ("generation_config.json", generation)]:
        with open(os.path.join(out, file), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=None if file == "tokenizer.json" else 2)
    print(json.dumps({"vocab": len(tokens), "merges": len(merges), "control_tokens": len(control), "pre": pre,
                      "bos": name(bos), "eos": name(eos), "chat_template": template is not None, "out": out}))


if __name__ == "__main__":
    main()
