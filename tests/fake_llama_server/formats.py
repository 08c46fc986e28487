"""Each API's response bodies and SSE events: /completion, /v1/completions and chat completions."""

from __future__ import annotations

import time
from typing import Any, Dict, List

from .common import BUILD_INFO, dumps, random_id
from .generation import GenRequest, Outcome
from .vocab import Vocab


class ApiFormat:
    """Builds one API's response bodies and SSE events; per-token events are plain string joins."""

    def __init__(self, gen: GenRequest, model: str, vocab: Vocab) -> None:
        self.gen = gen
        self.model = model
        self.vocab = vocab
        self.created = int(time.time())
        self.id = "chatcmpl-" + random_id(32)
        meta = {"created": self.created, "model": model, "system_fingerprint": BUILD_INFO}
        if gen.api == "completion":
            self.prefix = '{"index":0,"content":'
        elif gen.api == "oai_completion":
            self.prefix = '{"choices":[{"text":'
            self.suffix = (
                ',"index":0,"logprobs":null,"finish_reason":null}],'
                + dumps(meta | {"object": "text_completion", "id": self.id})[1:]
            )
        else:
            self.prefix = '{"choices":[{"finish_reason":null,"index":0,"delta":{"content":'
            self.suffix = "}}]," + dumps(self.chat_meta())[1:]

    def chat_meta(self) -> Dict[str, Any]:
        return {
            "created": self.created,
            "id": self.id,
            "model": self.model,
            "system_fingerprint": BUILD_INFO,
            "object": "chat.completion.chunk",
        }

    def first_events(self) -> List[str]:
        """Events before the first token: chat streams open with a role-only delta."""
        if self.gen.api != "chat":
            return []
        delta = {"role": "assistant", "content": None}
        return [dumps({"choices": [{"finish_reason": None, "index": 0, "delta": delta}]} | self.chat_meta())]

    def token_event(self, tid: int, n_decoded: int, n_prompt: int) -> str:
        piece = self.vocab.piece_json(tid)
        if self.gen.api == "completion":
            return (
                f'{self.prefix}{piece},"tokens":[{tid}],"stop":false,"id_slot":-1,'
                f'"tokens_predicted":{n_decoded},"tokens_evaluated":{n_prompt}}}'
            )
        return self.prefix + piece + self.suffix

    def completion_body(self, out: Outcome, stream: bool) -> Dict[str, Any]:
        """/completion's answer, or its final stream event (which has empty content)."""
        prompt_text = self.vocab.detokenize(self.gen.prompt)
        return {
            "index": 0,
            "content": "" if stream else out.content,
            "tokens": [],
            "id_slot": out.slot_id,
            "stop": True,
            "model": self.model,
            "tokens_predicted": out.n_decoded,
            "tokens_evaluated": out.n_prompt,
            "generation_settings": self.gen.params(full=True),
            "prompt": prompt_text,
            "has_new_line": "\n" in out.content,
            "truncated": out.truncated,
            "stop_type": out.stop_type,
            "stopping_word": out.stopping_word,
            "tokens_cached": out.tokens_cached,
            "timings": out.timings(),
        }

    def final_events(self, out: Outcome) -> List[str]:
        api = self.gen.api
        if api == "completion":
            return [dumps(self.completion_body(out, stream=True))]
        if api == "oai_completion":
            choice = {"text": "", "index": 0, "logprobs": None, "finish_reason": out.finish_reason}
            body = {"choices": [choice], "created": self.created, "model": self.model}
            body |= {"system_fingerprint": BUILD_INFO, "object": "text_completion", "usage": out.usage()}
            return [dumps(body | {"id": self.id, "timings": out.timings()}), "[DONE]"]
        finish = {"choices": [{"finish_reason": out.finish_reason, "index": 0, "delta": {}}]} | self.chat_meta()
        if not self.gen.include_usage:
            return [dumps(finish | {"timings": out.timings()}), "[DONE]"]
        usage = {"choices": []} | self.chat_meta() | {"usage": out.usage(), "timings": out.timings()}
        return [dumps(finish), dumps(usage), "[DONE]"]

    def body(self, out: Outcome) -> Dict[str, Any]:
        """The non-streaming answer."""
        api = self.gen.api
        if api == "completion":
            return self.completion_body(out, stream=False)
        if api == "oai_completion":
            choice = {"text": out.content, "index": 0, "logprobs": None, "finish_reason": out.finish_reason}
            obj = "text_completion"
        else:
            message = {"role": "assistant", "content": out.content}
            choice = {"finish_reason": out.finish_reason, "index": 0, "message": message}
            obj = "chat.completion"
        body = {"choices": [choice], "created": self.created, "model": self.model, "system_fingerprint": BUILD_INFO}
        return body | {"object": obj, "usage": out.usage(), "id": self.id, "timings": out.timings()}
