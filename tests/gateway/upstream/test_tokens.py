from __future__ import annotations

from tiergate.gateway.upstream.tokens import TokenCounter


def test_counts_offline_with_the_bundled_encodings() -> None:
    counter = TokenCounter()
    assert counter.text("hello world", "gpt-4o") == 2
    assert counter.text("", "gpt-4o") == 0
    assert counter.text("hello world", "gpt-3.5-turbo") == 2


def test_chat_prompt_tokens_follow_openais_framing() -> None:
    counter = TokenCounter()
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello world"}]
    # 3 per message + role + content, plus 3 for the reply's priming (OpenAI's cookbook formula)
    expected = 3 + (3 + 1 + counter.text("You are terse.", "gpt-4o")) + (3 + 1 + 2)
    assert counter.messages(messages, "gpt-4o") == expected


def test_parts_images_and_tools_add_tokens() -> None:
    counter = TokenCounter()
    text_only = [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]
    with_image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello world"},
                {"type": "image_url", "image_url": {"url": "x"}},
            ],
        }
    ]
    base = counter.messages(text_only, "gpt-4o")
    assert counter.messages(with_image, "gpt-4o") > base
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    assert counter.messages(text_only, "gpt-4o", tools) > base
