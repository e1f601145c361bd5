#!/usr/bin/env python3
"""Drives `ffnskip serve` with the official `openai` package: chat, text completion, streaming
with usage, log-probabilities, the ffnskip extension, and one error. Exits non-zero on the first mismatch.

    python3 scripts/openai-client.py --base-url http://127.0.0.1:8080/v1 [--api-key KEY]
"""
import argparse
import sys

import openai


def check(cond, what):
    if not cond:
        sys.exit(f"FAIL: {what}")
    print(f"ok: {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", default="none")
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)

    models = client.models.list()
    model = models.data[0].id
    check(bool(model), f"models.list names {model}")

    def ask(**extra):
        return client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=8,
            temperature=0,
            **extra,
        )

    chat = ask()
    text = chat.choices[0].message.content
    check(chat.choices[0].finish_reason in ("stop", "length"), "chat finish_reason")
    check(chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens, "chat usage adds up")

    stream = ask(stream=True, stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    check("".join(pieces) == text, "streamed chat equals the whole response")
    check(usage is not None and usage.completion_tokens == chat.usage.completion_tokens, "stream usage chunk")

    with_logprobs = ask(logprobs=True, top_logprobs=3)
    content = with_logprobs.choices[0].logprobs.content
    check(len(content) == with_logprobs.usage.completion_tokens, "one logprobs entry per generated token")
    check(all(e.logprob <= 0 and len(e.top_logprobs) == 3 for e in content), "logprobs <= 0 with 3 alternatives")
    check(all(e.top_logprobs[0].token == e.token for e in content), "greedy tokens are their top alternative")
    check(b"".join(bytes(e.bytes) for e in content).decode() == text, "the tokens' bytes spell the reply")

    completion = client.completions.create(
        model=model,
        prompt="The quick brown fox",
        max_tokens=6,
        temperature=0,
        extra_body={"ffnskip": {"policy": "ffnskip@0.5:warmup=1"}},
    )
    check(completion.choices[0].text != "", "completion text")
    ext = (completion.usage.model_extra or {}).get("ffnskip", {})
    check(ext.get("policy") == "ffnskip@0.5:warmup=1", "usage.ffnskip.policy")
    check(ext.get("ffn_skip_ratio_post_warmup", 0) > 0, "the policy skipped FFN blocks")

    try:
        client.completions.create(model=model, prompt="x", max_tokens=2, extra_body={"ffnskip": {"policy": "nope@1"}})
        check(False, "an unknown policy is refused")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "policy" in str(e), "an unknown policy is refused with 400")
    print("all ok")


if __name__ == "__main__":
    main()
