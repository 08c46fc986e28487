"""The request bodies of a run and the prompt factory behind them."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ..http import HttpClient, HttpError
from .plan import BenchParams
from .probe import ServerInfo
from .records import Api
from .workload import PromptFactory, ServerTokenizer


def build_body(api: Api, params: BenchParams, info: ServerInfo, prompt: Any, seed: int) -> Dict[str, Any]:
    """The request body; llama.cpp gets ignore_eos so the output is as long as asked, and cache_prompt=false
    so prefill is real — except for the workloads that measure the prompt cache (shared-prefix, multi-turn).
    For chat, `prompt` is the user message's text or the whole message list."""
    body: Dict[str, Any] = {"stream": True, "temperature": params.temperature, "seed": seed}
    if api is Api.COMPLETION:
        body.update(prompt=prompt, n_predict=params.max_output_tokens)
    else:
        body.update(max_tokens=params.max_output_tokens, stream_options={"include_usage": True})
        model = params.api_model or info.model_id
        if model:
            body["model"] = model
        if api is Api.OPENAI_CHAT:
            body["messages"] = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
    if info.is_llamacpp:
        body.update(cache_prompt=params.workload.cache_prompt, ignore_eos=True)
    body.update(params.extra_body)
    return body


def make_factory(params: BenchParams, info: ServerInfo, api: Api) -> Tuple[PromptFactory, Optional[str]]:
    """The prompt factory for this API, and a note when prompt lengths cannot be made exact."""
    tokenizer = None
    note = None
    if info.is_llamacpp:
        client = HttpClient(params.endpoint, api_key=params.api_key, timeout=60.0)
        tokenizer = ServerTokenizer(client)
        try:
            tokenizer.tokenize("probe")
        except (HttpError, RuntimeError, ValueError):
            tokenizer, note = None, "the server's /tokenize does not work: prompt lengths are estimates"
    else:
        note = "not llama.cpp (no /tokenize): prompt lengths are estimates, checked against usage.prompt_tokens"
    mode = "chat" if api is Api.OPENAI_CHAT else ("tokens" if info.is_llamacpp else "text")
    return PromptFactory(params.task, params.seed, tokenizer, mode), note
