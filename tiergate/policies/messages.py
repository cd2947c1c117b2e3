"""What a chat message's `content` says: a string, or a list of parts of which only text parts carry text.

The one reading of OpenAI's content shape (`"hi"` or `[{"type": "text", "text": "hi"}, {"type":
"image_url", ...}]`) for everything that turns a message into text: routing, token counts, judge prompts,
distillation, the demo's stand-in model. The gateway's ingress only checks that content is a string, a
list or null, so parts are read defensively here: a part that is not an object, or whose `text` is not a
string, carries no text.
"""

from __future__ import annotations

from typing import Any

__all__ = ["content_text", "image_parts", "is_text_only", "text_parts"]

_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})


def text_parts(content: Any) -> list[str]:
    """The texts of a content, in order: the string itself, or each part's string `text`; none otherwise."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def content_text(content: Any) -> str:
    """A content as one text: its text parts joined by a space ("" for None, images only, or no content)."""
    return " ".join(text_parts(content))


def image_parts(content: Any) -> int:
    """How many parts of a content are images (a part with a string `text` counts as text, whatever its type)."""
    if not isinstance(content, list):
        return 0
    return sum(
        1
        for p in content
        if isinstance(p, dict) and not isinstance(p.get("text"), str) and p.get("type") in _IMAGE_PART_TYPES
    )


def is_text_only(content: Any) -> bool:
    """Whether `content_text` is all of a content: a string, or a list whose every part is a text part."""
    return isinstance(content, str) or (
        isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content)
    )
