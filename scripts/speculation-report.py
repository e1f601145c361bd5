#!/usr/bin/env python3
"""Tables for docs/SPECULATION.md from the runs of scripts/speculation-bench.sh.

    scripts/speculation-report.py [RUN_DIR ...]   (default: every docs/runs/speculation/*/*)

Per run and decoding: tokens, decode tok/s (all prompts' tokens over all their decode seconds),
speed-up over dense in the same run (that ratio, and the median and worst of the per-prompt
ratios), prompts slower than dense by more than 3%, identical outputs, acceptance rate, tokens per
verification, the draft's cost per step relative to a dense step, and the share of decode time
spent drafting.
"""
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(run):
    items = {}
    with open(os.path.join(run, "items.jsonl")) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                items.setdefault(r["policy"], {})[r["item"]] = r
    return items


def report(run):
    items = load(run)
    dense = items.get("dense", {})
    meta = json.load(open(os.path.join(run, "meta.json")))
    print(f"### {os.path.relpath(run, ROOT)}\n")
    print(f"`{meta['command']}` ({meta['machine']}, {len(dense)} prompts)\n")
    print("| decoding | tokens | tok/s | speed-up | median / worst per prompt | slower >3% | identical "
          "| acceptance | tokens/verification | draft step cost | drafting share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    d_tok = sum(r["decode_steps"] for r in dense.values())
    d_sec = sum(r["decode_secs"] for r in dense.values())
    d_step = d_sec / d_tok
    for policy, rows in items.items():
        ids = [i for i in rows if i in dense]
        tok = sum(rows[i]["decode_steps"] for i in ids)
        sec = sum(rows[i]["decode_secs"] for i in ids)
        base = sum(dense[i]["decode_secs"] for i in ids) / sum(dense[i]["decode_steps"] for i in ids)
        speedup = base / (sec / tok)
        per = [(dense[i]["decode_secs"] / dense[i]["decode_steps"]) / (rows[i]["decode_secs"] / rows[i]["decode_steps"])
               for i in ids if rows[i]["decode_steps"] > 0]
        slower = sum(1 for p in per if p < 0.97)
        same = sum(1 for i in ids if rows[i]["output"] == dense[i]["output"])
        s = [rows[i]["speculation"] for i in ids if "speculation" in rows[i]]
        if s:
            drafted = sum(x["drafted"] for x in s)
            accepted = sum(x["accepted"] for x in s)
            ver = sum(x["verifications"] for x in s)
            steps = sum(x["draft_steps"] for x in s)
            dsec = sum(x["draft_secs"] for x in s)
            acc = f"{accepted / drafted:.2f}" if drafted else "–"
            tpv = f"{(accepted + ver) / ver:.2f}" if ver else "–"
            cost = f"{dsec / steps / d_step:.2f}" if steps else "0 (lookup)"
            share = f"{dsec / sec:.0%}"
        else:
            acc = tpv = cost = share = "–"
        print(f"| {policy} | {tok} | {tok / sec:.1f} | {speedup:.2f}× | {statistics.median(per):.2f}× / {min(per):.2f}× "
              f"| {slower}/{len(per)} | {same}/{len(ids)} | {acc} | {tpv} | {cost} | {share} |")
    print()


def main():
    runs = sys.argv[1:]
    if not runs:
        base = os.path.join(ROOT, "docs/runs/speculation")
        runs = sorted(os.path.join(base, m, s) for m in os.listdir(base) for s in os.listdir(os.path.join(base, m)))
    for run in runs:
        report(run)


if __name__ == "__main__":
    main()
