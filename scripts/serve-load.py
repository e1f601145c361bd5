#!/usr/bin/env python3
"""Load generator for an OpenAI-style completion server (`ffnskip serve`, `llama-server`).

N concurrent clients each send M streamed /v1/completions requests, with mixed prompts, lengths
and (for ffnskip) skip policies; every --disconnect-every'th request is dropped after its
second chunk. All requests are greedy, so with --check each answer must equal the one the same
request got alone before the load (no lost or mixed-up responses). Reports failures, aggregate
generated tok/s, p50/p99 time to first token and time per output token, /health afterwards and
the server's RSS (with --pid) before and after.

    python3 scripts/serve-load.py --url http://127.0.0.1:8080 --clients 32 --requests 10 --check --pid PID
"""
import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
from urllib.parse import urlparse

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colours are",
    "In 1969, the first humans",
    "A good breakfast includes",
]
POLICIES = ["dense", "ffnskip@0.25", "ffnskip@0.5:warmup=4", "speculate:ngram"]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def stream_request(url, body, api_key, drop_after=None):
    """Returns (text, completion_tokens, ttft, chunk_times, finished)."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"status {resp.status}: {resp.read()[:200]!r}")
    text, times, usage, done = [], [], None, False
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            break
        event = json.loads(data)
        if "error" in event:
            raise RuntimeError(f"error event: {event}")
        if event.get("usage"):
            usage = event["usage"]
        for choice in event.get("choices", []):
            piece = choice.get("text") or ""
            if piece:
                text.append(piece)
                times.append(time.perf_counter() - t0)
        if drop_after is not None and len(times) >= drop_after:
            conn.close()
            return "".join(text), len(times), times, False
    conn.close()
    if not done:
        raise RuntimeError("stream ended without [DONE]")
    n = usage["completion_tokens"] if usage else len(times)
    return "".join(text), n, times, True


def body_for(rng, policies):
    body = {
        "prompt": rng.choice(PROMPTS),
        "max_tokens": rng.choice([8, 16, 32, 64]),
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if policies:
        body["ffnskip"] = {"policy": rng.choice(policies)}
    return body


def key(body):
    return (body["prompt"], body["max_tokens"], json.dumps(body.get("ffnskip")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--api-key")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--requests", type=int, default=10, help="requests per client")
    ap.add_argument("--max-tokens", type=int, help="fixed length for every request (throughput runs)")
    ap.add_argument("--disconnect-every", type=int, default=0, help="drop every k-th request mid-stream (0: never)")
    ap.add_argument("--check", action="store_true", help="compare every answer with the request run alone")
    ap.add_argument("--llama", action="store_true", help="the server is llama-server: no ffnskip extension")
    ap.add_argument("--pid", type=int, help="server PID, for RSS before and after")
    ap.add_argument("--policies", default=",".join(POLICIES), help="comma-separated specs requests choose from")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    plan = []
    for c in range(args.clients):
        for r in range(args.requests):
            body = body_for(rng, [] if args.llama else args.policies.split(","))
            if args.max_tokens:
                body["max_tokens"] = args.max_tokens
            k = len(plan) + 1
            drop = 2 if args.disconnect_every and k % args.disconnect_every == 0 else None
            plan.append((c, body, drop))

    reference = {}
    if args.check:
        for _, body, _ in plan:
            if key(body) not in reference:
                reference[key(body)] = stream_request(args.url, body, args.api_key)[0]
    rss_before = rss_kib(args.pid) if args.pid else None

    results, failures, lock = [], [], threading.Lock()

    def client(c):
        for _, body, drop in [p for p in plan if p[0] == c]:
            try:
                text, n, times, finished = stream_request(args.url, body, args.api_key, drop)
                if finished and args.check and text != reference[key(body)]:
                    raise RuntimeError(f"answer differs from the solo run for {key(body)}: {text!r}")
                with lock:
                    results.append((n, times, finished))
            except Exception as e:  # every failure is counted and shown, none stops the run
                with lock:
                    failures.append(str(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    done = [r for r in results if r[2]]
    tokens = sum(n for n, _, _ in results)
    ttft = sorted(times[0] for _, times, _ in done if times)
    tpot = sorted((times[-1] - times[0]) / (len(times) - 1) for _, times, _ in done if len(times) > 1)

    def pct(xs, p):
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000 if xs else float("nan")

    u = urlparse(args.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/health")
    health = conn.getresponse().status
    time.sleep(1)
    rss_after = rss_kib(args.pid) if args.pid else None
    report = {
        "clients": args.clients,
        "requests": len(plan),
        "completed": len(done),
        "disconnected": len(results) - len(done),
        "failed": len(failures),
        "generated_tokens": tokens,
        "wall_s": round(wall, 2),
        "aggregate_tok_s": round(tokens / wall, 1),
        "ttft_ms_p50": round(pct(ttft, 50), 1),
        "ttft_ms_p99": round(pct(ttft, 99), 1),
        "tpot_ms_p50": round(pct(tpot, 50), 1),
        "tpot_ms_p99": round(pct(tpot, 99), 1),
        "health_after": health,
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "checked_against_solo": args.check,
    }
    print(json.dumps(report, indent=1))
    for f in failures[:10]:
        print("failure:", f, file=sys.stderr)
    sys.exit(1 if failures or health != 200 else 0)


if __name__ == "__main__":
    main()
