"""The endpoints: what each one answers once the model is loaded and the request is authorized."""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

from .chat import CHAT_TEMPLATE, CHAT_TEMPLATE_CAPS, apply_chat_template
from .common import BUILD_INFO, N_CTX_TRAIN, N_VOCAB, HttpError, dumps, error_body, random_id
from .engine import Engine
from .generation import GENERATION_DEFAULTS, parse_generation, prompt_tokens
from .httpio import EventStream, Request, Response, json_response
from .log import Log
from .metrics import Metrics
from .options import Options
from .slots import SlotPool
from .vocab import Vocab

Handler = Callable[[Request, EventStream], Any]


class Handlers:
    """The handler of every (method, path); completions go to the engine."""

    def __init__(self, opts: Options, log: Log, vocab: Vocab, pool: SlotPool, metrics: Metrics, engine: Engine) -> None:
        self.opts = opts
        self.log = log
        self.vocab = vocab
        self.pool = pool
        self.metrics = metrics
        self.engine = engine
        self.model_name = engine.model_name
        self.start_time = time.time()
        self.media_marker = "<__media_" + random_id(32) + "__>"

    def routes(self) -> Dict[Tuple[str, str], Handler]:
        return {
            ("GET", "/health"): self.health,
            ("GET", "/v1/health"): self.health,
            ("GET", "/models"): self.models,
            ("GET", "/v1/models"): self.models,
            ("GET", "/props"): self.props,
            ("GET", "/slots"): self.slots,
            ("GET", "/metrics"): self.metrics_endpoint,
            ("POST", "/tokenize"): self.tokenize,
            ("POST", "/detokenize"): self.detokenize,
            ("POST", "/apply-template"): self.apply_template,
            ("POST", "/v1/chat/completions/input_tokens"): self.input_tokens,
            ("POST", "/completion"): self.completion_api("completion"),
            ("POST", "/completions"): self.completion_api("completion"),
            ("POST", "/v1/completions"): self.completion_api("oai_completion"),
            ("POST", "/chat/completions"): self.completion_api("chat"),
            ("POST", "/v1/chat/completions"): self.completion_api("chat"),
        }

    def json_body(self, req: Request) -> Dict[str, Any]:
        """The request's JSON object, or the 400 nlohmann::json would have produced."""
        text = req.body.decode("utf-8", errors="replace")
        if not text.strip():
            msg = (
                "[json.exception.parse_error.101] parse error at line 1, column 1: attempting to parse an empty "
                "input; check that your input string or stream contains the expected JSON"
            )
            raise HttpError(400, error_body(400, msg, "invalid_request_error"))
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            msg = (
                f"[json.exception.parse_error.101] parse error at line {exc.lineno}, column {exc.colno}: "
                f"syntax error while parsing value - {exc.msg.lower()}"
            )
            self.log.srv("W", "operator()", "got exception: " + dumps(error_body(400, msg, "invalid_request_error")))
            raise HttpError(400, error_body(400, msg, "invalid_request_error")) from None
        if not isinstance(data, dict):
            kind = {list: "array", str: "string", bool: "boolean"}.get(
                type(data), "number" if data is not None else "null"
            )
            raise HttpError(
                400,
                error_body(
                    400, f"[json.exception.type_error.304] cannot use at() with {kind}", "invalid_request_error"
                ),
            )
        return data

    # -- simple endpoints -----------------------------------------------------------------------

    async def health(self, req: Request, stream: EventStream) -> Response:
        return json_response(200, {"status": "ok"})

    async def models(self, req: Request, stream: EventStream) -> Response:
        """The OpenAI model list, plus the Ollama-style `models` list llama-server also sends."""
        name = self.model_name
        size = os.path.getsize(self.opts.model) if self.opts.model and os.path.isfile(self.opts.model) else 0
        details = {
            "parent_model": "",
            "format": "gguf",
            "family": "",
            "families": [""],
            "parameter_size": "",
            "quantization_level": "",
        }
        listing: Dict[str, Any] = {
            "name": name,
            "model": name,
            "modified_at": "",
            "size": "",
            "digest": "",
            "type": "model",
            "description": "",
            "tags": [""],
            "capabilities": ["completion"],
            "parameters": "",
            "details": details,
        }
        model: Dict[str, Any] = {
            "id": name,
            "aliases": [name],
            "tags": [],
            "object": "model",
            "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
            "created": int(self.start_time),
            "owned_by": "llamacpp",
            "meta": {
                "vocab_type": 2,
                "n_vocab": N_VOCAB,
                "n_ctx": self.opts.n_ctx,
                "n_ctx_train": N_CTX_TRAIN,
                "n_embd": 576,
                "n_params": 134515008,
                "size": size,
                "ftype": "Q4_1",
            },
        }
        return json_response(200, {"models": [listing], "object": "list", "data": [model]})

    async def props(self, req: Request, stream: EventStream) -> Response:
        props = {
            "default_generation_settings": {"params": GENERATION_DEFAULTS, "n_ctx": self.opts.n_ctx},
            "total_slots": len(self.pool.slots),
            "model_alias": self.model_name,
            "model_ftype": "Q4_1",
            "model_path": self.opts.model,
            "modalities": {"vision": False, "video": False, "audio": False},
            "media_marker": self.media_marker,
            "endpoint_slots": self.opts.slots,
            "endpoint_props": False,
            "endpoint_metrics": self.opts.metrics,
            "ui": self.opts.webui,
            "ui_settings": {},
            "chat_template": CHAT_TEMPLATE,
            "chat_template_caps": CHAT_TEMPLATE_CAPS,
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "build_info": BUILD_INFO,
            "is_sleeping": False,
            "cors_proxy_enabled": False,
        }
        return json_response(200, props)

    async def slots(self, req: Request, stream: EventStream) -> Response:
        if not self.opts.slots:
            msg = "This server does not support slots endpoint. Start it with `--slots`"
            return json_response(501, error_body(501, msg, "not_supported_error"))
        if req.query.get("fail_on_no_slot") not in (None, "", "0", "false") and self.pool.busy == len(self.pool.slots):
            return json_response(503, error_body(503, "no slot available", "unavailable_error"))
        now = time.monotonic()
        return json_response(200, [slot.view(now, self.opts.prompt_tps) for slot in self.pool.slots])

    async def metrics_endpoint(self, req: Request, stream: EventStream) -> Response:
        if not self.opts.metrics:
            msg = "This server does not support metrics endpoint. Start it with `--metrics`"
            return json_response(501, error_body(501, msg, "not_supported_error"))
        text = self.metrics.render(self.pool.busy, self.pool.deferred)
        start = [("Process-Start-Time-Unix", str(int(self.start_time)))]
        return Response(200, text.encode("utf-8"), "text/plain; version=0.0.4", start)

    async def tokenize(self, req: Request, stream: EventStream) -> Response:
        data = self.json_body(req)
        content = data.get("content", "")
        if not isinstance(content, str):
            tokens = prompt_tokens(self.vocab, content)
            pieces = [self.vocab.piece(t) for t in tokens]
        else:
            pieces = self.vocab.pieces(content)
            tokens = [self.vocab.token_id(p) for p in pieces]
        if data.get("with_pieces"):
            return json_response(200, {"tokens": [{"id": t, "piece": p} for t, p in zip(tokens, pieces)]})
        return json_response(200, {"tokens": tokens})

    async def detokenize(self, req: Request, stream: EventStream) -> Response:
        tokens = self.json_body(req).get("tokens", [])
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise HttpError(500, error_body(500, "[json.exception.type_error.302] type must be number", "server_error"))
        for t in tokens:
            if not 0 <= t < N_VOCAB:
                msg = f"vector::_M_range_check: __n (which is {t}) >= this->size() (which is {N_VOCAB})"
                raise HttpError(500, error_body(500, msg, "server_error"))
        return json_response(200, {"content": self.vocab.detokenize(tokens)})

    async def apply_template(self, req: Request, stream: EventStream) -> Response:
        return json_response(200, {"prompt": apply_chat_template(self.json_body(req).get("messages"))})

    async def input_tokens(self, req: Request, stream: EventStream) -> Response:
        prompt = apply_chat_template(self.json_body(req).get("messages"))
        return json_response(200, {"input_tokens": len(self.vocab.tokenize(prompt)), "object": "response.input_tokens"})

    # -- completions ----------------------------------------------------------------------------

    def completion_api(self, api: str) -> Handler:
        async def handler(req: Request, stream: EventStream) -> Optional[Response]:
            gen = parse_generation(api, self.json_body(req), self.vocab, self.opts.n_ctx)
            return await self.engine.complete(req, gen, stream)

        return handler
