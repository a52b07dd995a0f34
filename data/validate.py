#!/usr/bin/env python3
"""Validate the seed datasets in data/ (Python 3 standard library only).

Checks: every line is UTF-8 JSON with the exact expected shape; minimum counts;
the EFT score histogram covers 0-5 with at least MIN_PER_SCORE each; no prompt is
shared between files (exact after normalisation, or near-duplicate); and eft.jsonl
is byte-for-byte what render_eft.py produces from eft.source.jsonl.

Usage: python3 data/validate.py     (exit status 0 when everything passes)
"""
import collections
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import render_eft  # noqa: E402

MIN_IFT = 110
MIN_EFT = 160
MIN_EFT_QUESTIONS = 40
MIN_PER_SCORE = 15
MIN_RANKED = 100
MIN_SEEDS = 60
MAX_JUSTIFICATION_WORDS = 80  # the judge template allows 100; the seed set stays shorter
NEAR_DUPLICATE = 0.75         # Jaccard similarity of content words between prompts
STOPWORDS = set("""a an and are as at be between by can could do does did for from give how i
in into is it its me my of on or should so tell than that the their them then there these
this to was were what when where which who whom why will with would you your explain
describe difference write""".split())

errors = []


def err(msg):
    errors.append(msg)


def is_text(x):
    return isinstance(x, str) and x.strip() != "" and x == x.strip()


def load(name):
    path = os.path.join(HERE, name)
    rows = []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        err(f"{name}: missing")
        return rows
    if data.startswith(b"\xef\xbb\xbf"):
        err(f"{name}: starts with a byte-order mark")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        err(f"{name}: not UTF-8 ({e})")
        return rows
    if not text.endswith("\n"):
        err(f"{name}: last line has no newline")
    for n, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
        if not line.strip():
            err(f"{name}:{n}: blank line")
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            err(f"{name}:{n}: invalid JSON ({e})")
    return rows


def keys_exact(name, n, obj, keys):
    if not isinstance(obj, dict) or set(obj) != set(keys):
        err(f"{name}:{n}: expected exactly keys {sorted(keys)}, got "
            f"{sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
        return False
    return True


def norm(s):
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def content_words(s):
    return {w for w in norm(s).split() if w not in STOPWORDS}


def jaccard(a, b):
    return len(a & b) / len(a | b) if a and b else 0.0


# ---- ift.jsonl
ift = load("ift.jsonl")
ift_prompts = []
for n, o in ift:
    if not keys_exact("ift.jsonl", n, o, ["messages"]):
        continue
    m = o["messages"]
    if not (isinstance(m, list) and len(m) == 2):
        err(f"ift.jsonl:{n}: messages must be a list of 2")
        continue
    for msg, role in zip(m, ["user", "assistant"]):
        if keys_exact("ift.jsonl", n, msg, ["role", "content"]):
            if msg["role"] != role:
                err(f"ift.jsonl:{n}: expected role {role}, got {msg['role']!r}")
            if not is_text(msg["content"]):
                err(f"ift.jsonl:{n}: {role} content must be non-empty, trimmed text")
    if isinstance(m[0], dict) and isinstance(m[0].get("content"), str):
        ift_prompts.append(m[0]["content"])
if len(ift) < MIN_IFT:
    err(f"ift.jsonl: {len(ift)} examples, need at least {MIN_IFT}")

# ---- eft.source.jsonl
src = load("eft.source.jsonl")
hist = collections.Counter()
by_question = collections.defaultdict(list)
for n, o in src:
    if not keys_exact("eft.source.jsonl", n, o, ["question", "response", "justification", "score"]):
        continue
    for k in ("question", "response", "justification"):
        if not is_text(o[k]):
            err(f"eft.source.jsonl:{n}: {k} must be non-empty, trimmed text")
    s = o["score"]
    if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s <= 5:
        err(f"eft.source.jsonl:{n}: score must be an integer 0-5, got {s!r}")
        continue
    if isinstance(o["justification"], str):
        words = len(o["justification"].split())
        if words > MAX_JUSTIFICATION_WORDS:
            err(f"eft.source.jsonl:{n}: justification has {words} words (max {MAX_JUSTIFICATION_WORDS})")
        if re.search(r"score\s*:", o["justification"], re.I):
            err(f"eft.source.jsonl:{n}: justification must not contain its own 'Score:' line")
    hist[s] += 1
    by_question[o["question"]].append((o["response"], s))
if len(src) < MIN_EFT:
    err(f"eft.source.jsonl: {len(src)} examples, need at least {MIN_EFT}")
if len(by_question) < MIN_EFT_QUESTIONS:
    err(f"eft.source.jsonl: {len(by_question)} questions, need at least {MIN_EFT_QUESTIONS}")
for q, answers in by_question.items():
    if not 3 <= len(answers) <= 4:
        err(f"eft.source.jsonl: question {q[:50]!r} has {len(answers)} answers (need 3-4)")
    if len({r for r, _ in answers}) != len(answers):
        err(f"eft.source.jsonl: question {q[:50]!r} has duplicate responses")
    if len({s for _, s in answers}) < 3:
        err(f"eft.source.jsonl: question {q[:50]!r} needs answers of at least 3 different scores")
for s in range(6):
    if hist[s] < MIN_PER_SCORE:
        err(f"eft.source.jsonl: score {s} occurs {hist[s]} times, need at least {MIN_PER_SCORE}")

# ---- eft.jsonl
eft = load("eft.jsonl")
for n, o in eft:
    if keys_exact("eft.jsonl", n, o, ["messages"]):
        m = o["messages"]
        ok = (isinstance(m, list) and len(m) == 2
              and all(isinstance(x, dict) and set(x) == {"role", "content"} for x in m)
              and [x["role"] for x in m] == ["user", "assistant"])
        if not ok:
            err(f"eft.jsonl:{n}: messages must be [user, assistant] with role/content only")
        elif not re.search(r"\nScore: [0-5]$", m[1]["content"]):
            err(f"eft.jsonl:{n}: assistant content must end with '\\nScore: <0-5>'")
try:
    expected = "".join(render_eft.build_lines())
    with open(os.path.join(HERE, "eft.jsonl"), encoding="utf-8") as f:
        if f.read() != expected:
            err("eft.jsonl: differs from what render_eft.py produces (run python3 data/render_eft.py)")
except (OSError, SystemExit, KeyError, ValueError) as e:
    err(f"eft.jsonl: could not compare with render_eft.py output ({e})")

# ---- ranked.jsonl
ranked = load("ranked.jsonl")
ranked_prompts = []
for n, o in ranked:
    if not keys_exact("ranked.jsonl", n, o, ["prompt", "answers"]):
        continue
    if not is_text(o["prompt"]):
        err(f"ranked.jsonl:{n}: prompt must be non-empty, trimmed text")
    else:
        ranked_prompts.append(o["prompt"])
    a = o["answers"]
    if not (isinstance(a, list) and 3 <= len(a) <= 4 and all(is_text(x) for x in a)):
        err(f"ranked.jsonl:{n}: answers must be a list of 3 or 4 non-empty strings")
    elif len(set(a)) != len(a):
        err(f"ranked.jsonl:{n}: answers must be distinct")
if len(ranked) < MIN_RANKED:
    err(f"ranked.jsonl: {len(ranked)} prompts, need at least {MIN_RANKED}")

# ---- seed_prompts.jsonl
seeds = load("seed_prompts.jsonl")
seed_prompts = []
for n, o in seeds:
    if keys_exact("seed_prompts.jsonl", n, o, ["prompt"]):
        if is_text(o["prompt"]):
            seed_prompts.append(o["prompt"])
        else:
            err(f"seed_prompts.jsonl:{n}: prompt must be non-empty, trimmed text")
if len(seeds) < MIN_SEEDS:
    err(f"seed_prompts.jsonl: {len(seeds)} prompts, need at least {MIN_SEEDS}")

# ---- prompt overlap within and across files
sets = {
    "ift.jsonl": ift_prompts,
    "eft.source.jsonl": list(by_question),
    "ranked.jsonl": ranked_prompts,
    "seed_prompts.jsonl": seed_prompts,
}
for name, prompts in sets.items():
    dup = [p for p, c in collections.Counter(map(norm, prompts)).items() if c > 1]
    for p in dup:
        err(f"{name}: duplicate prompt {p[:60]!r}")
allp = [(name, p, norm(p), content_words(p)) for name, ps in sets.items() for p in ps]
near = 0
for i in range(len(allp)):
    for j in range(i + 1, len(allp)):
        a, b = allp[i], allp[j]
        if a[0] == b[0]:
            continue
        if a[2] == b[2]:
            err(f"prompt shared by {a[0]} and {b[0]}: {a[1][:60]!r}")
        elif jaccard(a[3], b[3]) >= NEAR_DUPLICATE:
            near += 1
            err(f"near-duplicate prompts in {a[0]} and {b[0]}: {a[1][:60]!r} / {b[1][:60]!r}")

# ---- report
print(f"ift.jsonl           {len(ift):4d} examples")
print(f"eft.source.jsonl    {len(src):4d} judged responses to {len(by_question)} questions")
print(f"eft.jsonl           {len(eft):4d} examples")
print(f"ranked.jsonl        {len(ranked):4d} prompts "
      f"({sum(1 for _, o in ranked if isinstance(o, dict) and len(o.get('answers', [])) == 4)} with 4 answers)")
print(f"seed_prompts.jsonl  {len(seeds):4d} prompts")
print("EFT score histogram: " + ", ".join(f"{s}: {hist[s]}" for s in range(6)))
if errors:
    print(f"\nFAILED with {len(errors)} problem(s):")
    for e in errors:
        print("  - " + e)
    sys.exit(1)
print("\nOK: all checks passed")
