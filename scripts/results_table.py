#!/usr/bin/env python3
"""Prints the README's Results table (markdown) from the stage files that
scripts/results.sh leaves in an arm's folder:

    scripts/results_table.py load-tests/reports/results/judge_verify_64

One row per checkpoint: the yardstick (prompt- and instruction-level accuracy, strict
and loose, 95 % Wilson intervals), mean answer length, the judge on the gate's
verifiable pairs, what the iteration that made it trained on, the head to head against
its parent, and the wall time of each stage. Only the standard library."""

import json
import pathlib
import sys


def read(path):
    """A stage file: one JSON object per line (a loop stage prints the trainer's
    summary, then the iteration's report)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def seconds(folder, stage):
    path = folder / f"{stage}.seconds"
    return int(path.read_text()) if path.exists() else None


def pct(p, interval=True):
    if p is None:
        return "–"
    text = f"{p['value'] * 100:.1f}"
    return f"{text} [{p['low'] * 100:.1f}, {p['high'] * 100:.1f}]" if interval else text


def minutes(s):
    return "–" if s is None else f"{s / 60:.1f}"


def main(folder):
    folder = pathlib.Path(folder)
    rows = []
    reports = {}
    t = 0
    while True:
        ifeval = read(folder / f"m{t}.ifeval.json")
        report = [r for r in read(folder / f"iter{t}.json") if "iteration" in r and "gate" in r]
        if not ifeval and not report and t > 1:
            break
        if report:
            reports[t] = report[0]
        rows.append((t, ifeval[0] if ifeval else None))
        t += 1

    print("| | prompt strict % | prompt loose % | instr. strict % | instr. loose % | tokens | judge on verifiable pairs % | pairs (by verifier) | scores 1–5 | h2h vs parent W/T/L (unparsed) | minutes: data, train, gate, yardstick |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t, m in rows:
        report = reports.get(t)
        child_report_of_next = reports.get(t + 1)
        # The judge of M(t) was measured by the gate of the iteration that made M(t)
        # (as the child) or of the next one (as the parent).
        judge = None
        if report and report["gate"].get("enabled"):
            judge = report["gate"]["child"]
        elif child_report_of_next and child_report_of_next["gate"].get("enabled"):
            judge = child_report_of_next["gate"]["parent"]
        judge_text = "–"
        if judge and judge.get("judge_accuracy") is not None:
            k, n = round(judge["judge_accuracy"] * judge["judge_pairs"]), judge["judge_pairs"]
            lo, hi = wilson(k, n)
            judge_text = f"{judge['judge_accuracy'] * 100:.1f} [{lo * 100:.1f}, {hi * 100:.1f}] (n={n})"
        pairs = scores = h2h = "–"
        times = "–"
        if report:
            pairs = f"{report['pairs']} ({report.get('pairs_by_verifier', 0)})"
            scores = " ".join(f"{k}:{v}" for k, v in sorted(report["score_histogram"].items()))
            times = ", ".join(minutes(report.get(k)) for k in ("data_seconds", "train_seconds", "gate_seconds"))
            if report["gate"].get("refused"):
                pairs += " **refused**"
        elif t == 1:
            times = f"SFT {minutes(seconds(folder, 'm1.sft'))}"
        times += f", {minutes(seconds(folder, f'm{t}.ifeval'))}"
        duel = read(folder / f"m{t}.h2h.json")
        if duel:
            d = duel[0]
            h2h = f"{d['wins']}/{d['ties']}/{d['losses']} ({d['unparsed_verdicts']}/{2 * d['prompts']})"
        name = f"M{t}" + (" (default)" if t == 0 else " = SFT(M0)" if t == 1 else "")
        if m is None:
            print(f"| {name} | – | – | – | – | – | {judge_text} | {pairs} | {scores} | {h2h} | {times} |")
            continue
        print(
            f"| {name} | {pct(m['prompt_strict'])} | {pct(m['prompt_loose'], False)} | {pct(m['instruction_strict'])} "
            f"| {pct(m['instruction_loose'], False)} | {m['mean_answer_tokens']:.0f} | {judge_text} | {pairs} | {scores} | {h2h} | {times} |"
        )
    print()
    for t, report in sorted(reports.items()):
        gate, move = report["gate"], report.get("policy_movement")
        line = f"- iteration {t}: {report.get('verifiable_prompts', 0)} checkable prompts, answers passing all: {pct_plain(report.get('verifiable_pass_rate'))}"
        line += f"; tie rate {pct_plain(report.get('tie_rate'))}, judge parse rate {pct_plain(report.get('judge_parse_rate'))}"
        if gate.get("instruction_change"):
            line += f"; gate: instructions {points(gate['instruction_change'])}"
            if gate.get("judge_change"):
                line += f", judge {points(gate['judge_change'])}"
        if gate.get("refused"):
            line += f" — refused: {'; '.join(gate['reasons'])}"
        if move:
            line += (f"; policy moved: margin {move['margin_change']:+.2f} [{move['margin_change_low']:+.2f}, {move['margin_change_high']:+.2f}],"
                     f" mean |Δ log p| {move['mean_abs_logprob_change']:.2f}")
        print(line)
    # Each checkpoint against M1 on the whole yardstick, item by item (the same prompts,
    # greedy answers): per prompt (all followed) and per instruction, +1 / -1 / 0.
    base = answers(folder / "m1.ifeval.answers.json")
    if base:
        for name in sorted(p.name.split(".")[0] for p in folder.glob("*.ifeval.answers.json")):
            if name == "m1":
                continue
            other = answers(folder / f"{name}.ifeval.answers.json")
            prompt_change = paired([all(a) for a in base], [all(b) for b in other])
            instruction_change = paired([x for a in base for x in a], [x for b in other for x in b])
            print(f"- {name} − m1, paired on the yardstick: prompt-level {points(prompt_change)}, instruction-level {points(instruction_change)}")


def answers(path):
    """Per prompt, the strict outcome of each instruction (in the yardstick's order)."""
    if not path.exists():
        return None
    return [item["outcome"]["strict"] for item in sorted(json.loads(path.read_text()), key=lambda item: item["id"])]


def paired(before, after):
    """Mean of after − before over items (each 0 or 1) with its 95 % interval."""
    changes = [int(b) - int(a) for a, b in zip(before, after)]
    n = len(changes)
    mean = sum(changes) / n if n else 0.0
    sd = (sum((c - mean) ** 2 for c in changes) / (n - 1)) ** 0.5 if n > 1 else 0.0
    half = 1.96 * sd / n**0.5 if n else 0.0
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def points(change):
    return f"{change['mean'] * 100:+.1f} points [{change['low'] * 100:+.1f}, {change['high'] * 100:+.1f}] (n={change['n']})"


def pct_plain(x):
    return "–" if x is None else f"{x * 100:.0f} %"


def wilson(k, n, z=1.959963984540054):
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / denom
    return max(0.0, centre - half), min(1.0, centre + half)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
