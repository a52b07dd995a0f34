#!/usr/bin/env python3
"""Render eft.jsonl (chat-format judge training examples) from eft.source.jsonl.

Each source line {"question", "response", "justification", "score"} becomes
{"messages": [{"role": "user", "content": RENDERED},
              {"role": "assistant", "content": JUSTIFICATION + "\nScore: " + str(score)}]}
where RENDERED is templates/judge.txt with {prompt} and {response} filled in one
pass (the same way src/judge/template.rs renders it), so placeholder-like text inside
a question or response is left untouched.

Usage: python3 data/render_eft.py [--check]
  --check  do not write; exit 1 if eft.jsonl differs from what would be written.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TEMPLATE = os.path.join(ROOT, "templates", "judge.txt")
SOURCE = os.path.join(HERE, "eft.source.jsonl")
OUTPUT = os.path.join(HERE, "eft.jsonl")
PROMPT, RESPONSE = "{prompt}", "{response}"


def load_template(path=TEMPLATE):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for p in (PROMPT, RESPONSE):
        if text.count(p) != 1:
            raise SystemExit(f"{path}: {p} must occur exactly once")
    return text


def render(template, prompt, response):
    """Fill both placeholders in a single left-to-right pass."""
    out, i = [], 0
    while True:
        j = template.find("{", i)
        if j < 0:
            out.append(template[i:])
            return "".join(out)
        out.append(template[i:j])
        if template.startswith(PROMPT, j):
            out.append(prompt)
            i = j + len(PROMPT)
        elif template.startswith(RESPONSE, j):
            out.append(response)
            i = j + len(RESPONSE)
        else:
            out.append("{")
            i = j + 1


def build_lines(template=None, source=SOURCE):
    template = template if template is not None else load_template()
    lines = []
    with open(source, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            row = json.loads(raw)
            score = row["score"]
            if not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= 5:
                raise SystemExit(f"{source}:{n}: score must be an integer 0-5")
            msg = {"messages": [
                {"role": "user", "content": render(template, row["question"], row["response"])},
                {"role": "assistant", "content": row["justification"] + "\nScore: " + str(score)},
            ]}
            lines.append(json.dumps(msg, ensure_ascii=False) + "\n")
    return lines


def main():
    text = "".join(build_lines())
    if "--check" in sys.argv[1:]:
        try:
            with open(OUTPUT, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print("eft.jsonl is out of date; run python3 data/render_eft.py")
            sys.exit(1)
        print("eft.jsonl is up to date")
        return
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUTPUT} ({text.count(chr(10))} lines)")


if __name__ == "__main__":
    main()
