#!/usr/bin/env python3
"""Aggregate throughput of one server at several client counts, side by side: runs
`serve-load.py` for each count in turn, --rounds times (interleaved, so load from other
processes hits every count alike), and prints each count's runs and their median (of aggregate tok/s, and of each run's p50/p99
time per output token and to first token).

    python3 scripts/serve-scaling.py --url http://127.0.0.1:18416 --clients 1,4 --tokens 256 \
        --max-tokens 64 --rounds 5 -- --policies dense
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--clients", default="1,4", help="comma-separated client counts")
    ap.add_argument("--tokens", type=int, default=256, help="tokens generated per run, in all")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("rest", nargs="*", help="more serve-load.py arguments (after --)")
    args = ap.parse_args()
    load = os.path.join(os.path.dirname(os.path.abspath(__file__)), "serve-load.py")
    counts = [int(c) for c in args.clients.split(",")]
    runs = {c: [] for c in counts}
    for _ in range(args.rounds):
        for c in counts:
            requests = max(1, args.tokens // args.max_tokens // c)
            cmd = [sys.executable, load, "--url", args.url, "--clients", str(c), "--requests", str(requests),
                   "--max-tokens", str(args.max_tokens), *args.rest]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            runs[c].append(json.loads(out))
    base = statistics.median(r["aggregate_tok_s"] for r in runs[counts[0]])
    for c in counts:
        tok_s = [r["aggregate_tok_s"] for r in runs[c]]
        med = statistics.median(tok_s)
        print(json.dumps({
            "clients": c,
            "aggregate_tok_s": tok_s,
            "median_tok_s": med,
            "ratio_to_first": round(med / base, 2),
            "tpot_ms_p50": statistics.median(r["tpot_ms_p50"] for r in runs[c]),
            "tpot_ms_p99": statistics.median(r["tpot_ms_p99"] for r in runs[c]),
            "ttft_ms_p50": statistics.median(r["ttft_ms_p50"] for r in runs[c]),
            "ttft_ms_p99": statistics.median(r["ttft_ms_p99"] for r in runs[c]),
        }))


if __name__ == "__main__":
    main()
