"""SmolLM2's chat template, as /props describes it and as the fake applies it to chat messages."""

from __future__ import annotations

from typing import Any

from .common import HttpError, error_body

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_TEMPLATE_CAPS = {
    "supports_object_arguments": False,
    "supports_parallel_tool_calls": False,
    "supports_preserve_reasoning": False,
    "supports_reasoning_effort": False,
    "supports_string_content": True,
    "supports_system_role": True,
    "supports_tool_calls": False,
    "supports_tools": False,
    "supports_typed_content": False,
}


def message_text(content: Any) -> str:
    """A message's content: a string, or OpenAI-style parts of which the text ones count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(str(t) for t in texts)
    raise HttpError(400, error_body(400, "Invalid 'content' type", "invalid_request_error"))


def apply_chat_template(messages: Any) -> str:
    """SmolLM2's ChatML template (with its default system message) and the generation prompt."""
    if messages is None:
        raise HttpError(400, error_body(400, "'messages' is required", "invalid_request_error"))
    if not isinstance(messages, list):
        raise HttpError(400, error_body(400, "Expected 'messages' to be an array", "invalid_request_error"))
    parts = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise HttpError(400, error_body(400, "Missing 'role' in message", "invalid_request_error"))
        if i == 0 and msg["role"] != "system":
            parts.append(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
        parts.append(f"<|im_start|>{msg['role']}\n{message_text(msg.get('content'))}<|im_end|>\n")
    parts.append("<|im_start|>assistant\n")
    return "".join(parts)
