from __future__ import annotations

from typing import Any

import pytest

from tiergate.policies.judge import pairwise_judge_messages as shadow_judge_messages
from tiergate.policies.messages import content_text, image_parts, is_text_only, text_parts
from tiergate.policies.verifiers import pass_fail_judge_messages as cascade_judge_messages

TEXT = {"type": "text", "text": "hello"}
IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}

# (content, text parts, content_text, image parts, text only)
CASES: list[tuple[Any, list[str], str, int, bool]] = [
    ("hi there", ["hi there"], "hi there", 0, True),
    ("", [""], "", 0, True),
    (None, [], "", 0, False),
    ([], [], "", 0, True),
    ([TEXT], ["hello"], "hello", 0, True),
    ([TEXT, {"type": "text", "text": "world"}], ["hello", "world"], "hello world", 0, True),
    ([IMAGE, TEXT], ["hello"], "hello", 1, False),  # no stray separator where the image was
    ([TEXT, IMAGE, TEXT], ["hello", "hello"], "hello hello", 1, False),
    ([{"type": "input_image"}, {"type": "image"}], [], "", 2, False),
    ([{"type": "input_audio", "input_audio": {}}], [], "", 0, False),
    ([{"type": "text", "text": 5}], [], "", 0, True),  # a text that is not a string carries none
    ([{"type": "text"}], [], "", 0, True),
    (["loose string", 3, None], [], "", 0, False),  # parts that are not objects
    ([{"type": "image_url", "text": "caption"}], ["caption"], "caption", 0, False),  # has text: counts as text
    (42, [], "", 0, False),
    ({"text": "an object, not a list"}, [], "", 0, False),
]  # fmt: skip


@pytest.mark.parametrize(("content", "parts", "text", "images", "text_only"), CASES)
def test_reading_a_content(content: Any, parts: list[str], text: str, images: int, text_only: bool) -> None:
    assert text_parts(content) == parts
    assert content_text(content) == text
    assert image_parts(content) == images
    assert is_text_only(content) is text_only


def test_judge_prompts_flatten_content_with_the_helper() -> None:
    conversation = [{"role": "user", "content": [TEXT, IMAGE, {"type": "text", "text": "world"}]}]
    assert "[user]\nhello world" in shadow_judge_messages(conversation, "a", "b")[1]["content"]
    answer = {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}
    assert "[user] hello world" in cascade_judge_messages(conversation, answer)[1]["content"]
