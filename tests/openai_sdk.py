"""The official OpenAI Python SDK against srlm, unchanged: chat, streaming, n>1,
log-probs, legacy completions, the models list and error mapping.

Usage: python3 tests/openai_sdk.py http://127.0.0.1:8080/v1
"""
import sys

import openai
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="unused", max_retries=0, timeout=600)

models = [m.id for m in client.models.list()]
assert "current" in models and len(models) == 2, models

messages = [{"role": "user", "content": "What is 2 + 2?"}]
chat = client.chat.completions.create(model="current", messages=messages, max_tokens=12, temperature=0)
assert chat.choices[0].message.role == "assistant"
assert chat.choices[0].message.content, chat
assert chat.usage.completion_tokens >= 1

stream = client.chat.completions.create(
    model="current", messages=messages, max_tokens=12, temperature=0, stream=True,
    stream_options={"include_usage": True},
)
streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
assert streamed == chat.choices[0].message.content, (streamed, chat.choices[0].message.content)

many = client.chat.completions.create(model="current", messages=messages, max_tokens=8, n=3, temperature=0.9, seed=5)
assert [c.index for c in many.choices] == [0, 1, 2]

lp = client.chat.completions.create(
    model="current", messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2
)
tokens = lp.choices[0].logprobs.content
assert tokens and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)

text = client.completions.create(model="current", prompt="Once upon a time", max_tokens=6, temperature=0)
assert text.choices[0].text

try:
    client.chat.completions.create(model="current", messages=messages, temperature=9)
    raise AssertionError("temperature 9 must be refused")
except openai.BadRequestError as err:
    assert err.param == "temperature", err.body

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    raise AssertionError("unknown model must be refused")
except openai.NotFoundError:
    pass

print("openai SDK: all checks passed")
