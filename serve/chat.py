"""What an OpenAI chat request asks of the scoring service, read the same way wherever it is read.

`image_and_text` (the single data-URL image and the user's text in its messages) and
`model_dimensions` (the dimensions its `model` names) are used by the router's chat route
(`serve.router`) and by the district job on an OpenAI batch file (`serve.district.openai_batch`),
so a line scored by either gets the same answer or the same refusal. Nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import Collection

from serve.errors import RequestValidationFailed, UnsupportedModelError


def image_and_text(messages) -> tuple[str, str | None]:
    """The single image (data URL) and any user text from the chat request's messages."""
    images: list[str] = []
    texts: list[str] = []
    for message in messages:
        if message.role != "user" or message.content is None:
            continue
        if isinstance(message.content, str):
            texts.append(message.content)
            continue
        for part in message.content:
            if part.type == "image_url":
                if part.image_url is None:
                    raise RequestValidationFailed("an image_url part needs image_url.url")
                if not part.image_url.url.startswith("data:"):
                    raise RequestValidationFailed(
                        "only data URLs (data:image/...;base64,...) are accepted: the service does not fetch remote "
                        "images"
                    )
                images.append(part.image_url.url)
            elif part.type == "text" and part.text is not None:
                texts.append(part.text)
    if len(images) != 1:
        raise RequestValidationFailed(f"the user message must contain exactly one image_url part, found {len(images)}")
    text = "\n".join(t for t in texts if t.strip()) or None
    return images[0], text


def model_dimensions(model: str, rubric_name: str, known_dimensions: Collection[str]) -> list[str] | None:
    """The dimensions a chat `model` asks for: None (all of them) for the rubric's name, [that one] for a
    dimension's name; anything else raises UnsupportedModelError."""
    if model == rubric_name:
        return None
    if model in known_dimensions:
        return [model]
    raise UnsupportedModelError(
        f"model {model!r} does not exist; use {rubric_name!r} or one of {list(known_dimensions)}"
    )
