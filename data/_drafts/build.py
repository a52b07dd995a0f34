"""Assemble the JSONL seed files from the hand-written drafts in this folder."""
import json, os, re, sys
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.dirname(HERE)

def blocks(text, marker):
    """Split text into (tag, body) blocks at lines starting with marker."""
    out = []
    for line in text.split("\n"):
        if line.startswith(marker):
            out.append([line[len(marker):].strip(), []])
        else:
            if not out:
                if line.strip():
                    sys.exit("text before first marker: %r" % line)
                continue
            out[-1][1].append(line)
    return [(t, "\n".join(b).strip()) for t, b in out]

def read(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()

def write(name, rows):
    with open(os.path.join(DATA, name), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(name, len(rows))

# IFT
ift = []
for fn in sorted(x for x in os.listdir(HERE) if re.match(r"ift\d+\.txt$", x)):
    bl = blocks(read(fn), "=== ")
    assert len(bl) % 2 == 0, fn
    for (tq, q), (ta, a) in zip(bl[0::2], bl[1::2]):
        assert tq == "Q" and ta == "A" and q and a, (fn, q[:40])
        ift.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
write("ift.jsonl", ift)

# EFT source
eft = []
for fn in sorted(x for x in os.listdir(HERE) if re.match(r"eft\d+\.txt$", x)):
    q = None
    pending = None
    for tag, body in blocks(read(fn), "@@ "):
        if tag == "Q":
            assert pending is None, (fn, body[:40])
            q = body
        elif tag.startswith("R "):
            assert pending is None, (fn, body[:40])
            pending = (int(tag[2:]), body)
        elif tag == "J":
            assert pending is not None, (fn, body[:40])
            score, resp = pending
            eft.append({"question": q, "response": resp, "justification": body, "score": score})
            pending = None
        else:
            sys.exit("bad tag %r in %s" % (tag, fn))
    assert pending is None, fn
write("eft.source.jsonl", eft)

# ranked
if os.path.exists(os.path.join(HERE, "ranked.txt")):
    ranked = []
    for tag, body in blocks(read("ranked.txt"), "%% "):
        if tag == "P":
            ranked.append({"prompt": body, "answers": []})
        elif tag == "A":
            ranked[-1]["answers"].append(body)
        else:
            sys.exit("bad ranked tag %r" % tag)
    write("ranked.jsonl", ranked)

# seeds: blank-line separated prompts
if os.path.exists(os.path.join(HERE, "seeds.txt")):
    seeds = [p.strip() for p in re.split(r"\n\s*\n", read("seeds.txt")) if p.strip()]
    write("seed_prompts.jsonl", [{"prompt": p} for p in seeds])
