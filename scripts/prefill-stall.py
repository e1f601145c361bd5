#!/usr/bin/env python3
"""How long a running stream stalls while a long prompt joins: streams one greedy completion,
sends a long prompt once it is under way, and prints the running stream's largest gap between
tokens during the long prompt's prefill, its median gap before, and the long prompt's time to
first token. Medians over --rounds.

    python3 scripts/prefill-stall.py --url http://127.0.0.1:8080 [--prompt-tokens 1500] [--rounds 3]
"""
import argparse
import json
import statistics
import threading
import time
import urllib.request


def stream(url, prompt, max_tokens, times):
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        for line in r:
            if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
                times.append(time.perf_counter())


def tokens(url, text):
    """The prompt's token count, from a zero-token completion's usage."""
    body = json.dumps({"prompt": text, "max_tokens": 0}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["usage"]["prompt_tokens"]


def one_round(url, long_prompt, warm):
    running = []
    t = threading.Thread(target=stream, args=(url, "Once upon a time", 600, running))
    t.start()
    while len(running) < warm:
        time.sleep(0.005)
    sent = time.perf_counter()
    joined = []
    stream(url, long_prompt, 1, joined)
    first = joined[0]
    t.join()
    before = [b - a for a, b in zip(running, running[1:]) if b < sent]
    # Gaps that overlap the prefill: from the last token before it was sent to the first after.
    around = [b - a for a, b in zip(running, running[1:]) if b > sent and a < first]
    return max(around), statistics.median(before), first - sent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    words = []
    i = 0
    while True:
        words.append(f"Line {i}: the quick brown fox jumps over the lazy dog.")
        i += 1
        if i % 10 == 0 and tokens(args.url, " ".join(words)) >= args.prompt_tokens:
            break
    long_prompt = " ".join(words)
    n = tokens(args.url, long_prompt)
    rows = [one_round(args.url, long_prompt, warm=20) for _ in range(args.rounds)]
    med = lambda k: statistics.median(r[k] for r in rows) * 1000
    print(f"prompt {n} tokens, {args.rounds} rounds: max gap {med(0):.0f} ms "
          f"({', '.join(f'{r[0] * 1000:.0f}' for r in rows)}), median gap before {med(1):.1f} ms, "
          f"TTFT of the long prompt {med(2):.0f} ms")


if __name__ == "__main__":
    main()
