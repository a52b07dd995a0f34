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
