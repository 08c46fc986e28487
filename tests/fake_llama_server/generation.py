"""A completion request as the fake understands it, how it is parsed, and what running it produced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List

from .chat import apply_chat_template
from .common import N_VOCAB, HttpError, error_body
from .vocab import Vocab

GENERATION_DEFAULTS: Dict[str, Any] = {
    "seed": 4294967295,
    "temperature": 0.800000011920929,
    "dynatemp_range": 0.0,
    "dynatemp_exponent": 1.0,
    "top_k": 40,
    "top_p": 0.949999988079071,
    "min_p": 0.05000000074505806,
    "top_n_sigma": -1.0,
    "xtc_probability": 0.0,
    "xtc_threshold": 0.10000000149011612,
    "typical_p": 1.0,
    "repeat_last_n": 64,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "dry_multiplier": 0.0,
    "dry_base": 1.75,
    "dry_allowed_length": 2,
    "dry_penalty_last_n": 64,
    "mirostat": 0,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.10000000149011612,
    "adaptive_target": -1.0,
    "adaptive_decay": 0.8999999761581421,
    "max_tokens": -1,
    "n_predict": -1,
    "n_keep": 0,
    "n_discard": 0,
    "ignore_eos": False,
    "stream": False,
    "n_probs": 0,
    "min_keep": 0,
    "chat_format": "Content-only",
    "reasoning_format": "none",
    "reasoning_in_content": False,
    "generation_prompt": "",
    "samplers": ["penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"],
    "speculative.types": "none",
    "timings_per_token": False,
    "post_sampling_probs": False,
    "backend_sampling": False,
    "lora": [],
}
# Keys that only the per-request generation_settings carry, inserted where the real server has them.
SETTINGS_EXTRA_AFTER: Dict[str, Dict[str, Any]] = {
    "dry_penalty_last_n": {"dry_sequence_breakers": ["\n", ":", '"', "*"]},
    "adaptive_decay": {"stop": []},
    "stream": {"logit_bias": []},
    "min_keep": {"grammar": "", "grammar_lazy": False, "grammar_triggers": [], "preserved_tokens": []},
}


@dataclass
class GenRequest:
    api: str  # "completion" (/completion), "oai_completion" (/v1/completions) or "chat"
    prompt: List[int]
    n_predict: int  # -1: no limit
    ignore_eos: bool
    cache_prompt: bool
    stream: bool
    include_usage: bool
    stop: List[str]
    body: Dict[str, Any]

    def params(self, full: bool) -> Dict[str, Any]:
        """/slots `params` (full=False) or a response's `generation_settings` (full=True)."""
        out: Dict[str, Any] = {}
        for key, default in GENERATION_DEFAULTS.items():
            value = default
            if key in ("temperature", "top_k", "top_p", "min_p", "seed") and key in self.body:
                value = self.body[key]
            out[key] = value
            if full and key in SETTINGS_EXTRA_AFTER:
                out.update(SETTINGS_EXTRA_AFTER[key])
        out.update(max_tokens=self.n_predict, n_predict=self.n_predict, ignore_eos=self.ignore_eos, stream=self.stream)
        out["reasoning_format"] = "deepseek"
        if full:
            out["stop"] = list(self.stop)
        return out


@dataclass
class Outcome:
    """What one completion produced, with the real server's timing fields."""

    content: str = ""
    n_decoded: int = 0
    n_cache: int = 0
    n_prompt: int = 0  # all prompt tokens, cached ones included
    prompt_ms: float = 0.0
    predicted_ms: float = 0.0
    stop_type: str = "none"
    stopping_word: str = ""
    truncated: bool = False
    slot_id: int = -1
    tokens_cached: int = 0

    @property
    def finish_reason(self) -> str:
        return "stop" if self.stop_type in ("eos", "word") else "length"

    def timings(self) -> Dict[str, Any]:
        prompt_n = self.n_prompt - self.n_cache
        per_prompt = self.prompt_ms / prompt_n if prompt_n else 0.0
        # The first token comes out of prompt processing, so generation time covers n - 1 steps.
        per_token = self.predicted_ms / (self.n_decoded - 1) if self.n_decoded > 1 else 0.0
        return {
            "cache_n": self.n_cache,
            "prompt_n": prompt_n,
            "prompt_ms": round(self.prompt_ms, 3),
            "prompt_per_token_ms": per_prompt,
            "prompt_per_second": 1e3 / per_prompt if per_prompt else 0.0,
            "predicted_n": self.n_decoded,
            "predicted_ms": round(self.predicted_ms, 3),
            "predicted_per_token_ms": per_token,
            "predicted_per_second": 1e3 / per_token if per_token else 0.0,
        }

    def usage(self) -> Dict[str, Any]:
        return {
            "completion_tokens": self.n_decoded,
            "prompt_tokens": self.n_prompt,
            "total_tokens": self.n_prompt + self.n_decoded,
            "prompt_tokens_details": {"cached_tokens": self.n_cache},
        }


def prompt_tokens(vocab: Vocab, prompt: Any) -> List[int]:
    """A prompt string, token ids, or a mix of both (one prompt; lists of prompts are not supported)."""
    if isinstance(prompt, str):
        return vocab.tokenize(prompt)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        return prompt_tokens(vocab, prompt[0])
    if isinstance(prompt, list) and not all(isinstance(p, str) for p in prompt) or prompt == []:
        tokens: List[int] = []
        for part in prompt:
            if isinstance(part, str):
                tokens += vocab.tokenize(part)
            elif isinstance(part, int) and not isinstance(part, bool):
                tokens.append(part)
            else:
                break
        else:
            return tokens
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        msg = "the fake llama-server takes one prompt per request"
        raise HttpError(400, error_body(400, msg, "invalid_request_error"))
    msg = (
        '"prompt" elements must be a string, a list of tokens, a JSON object containing a prompt string, '
        "or a list of mixed strings & tokens."
    )
    raise HttpError(400, error_body(400, msg, "invalid_request_error"))


def parse_generation(api: str, data: Dict[str, Any], vocab: Vocab, n_ctx: int) -> GenRequest:
    """A completion request's JSON body; HttpError where llama-server refuses it."""
    if api == "chat":
        prompt = vocab.tokenize(apply_chat_template(data.get("messages")))
    else:
        if "prompt" not in data:
            msg = "[json.exception.out_of_range.403] key 'prompt' not found"
            raise HttpError(400, error_body(400, msg, "invalid_request_error"))
        prompt = prompt_tokens(vocab, data["prompt"])
    if any(not 0 <= t < N_VOCAB for t in prompt):
        raise HttpError(400, error_body(400, "Prompt contains invalid tokens", "invalid_request_error"))
    if len(prompt) >= n_ctx:
        msg = f"request ({len(prompt)} tokens) exceeds the available context size ({n_ctx} tokens), try increasing it"
        raise HttpError(
            400, error_body(400, msg, "exceed_context_size_error", n_prompt_tokens=len(prompt), n_ctx=n_ctx)
        )
    limit = data.get("n_predict", data.get("max_tokens", data.get("max_completion_tokens", -1)))
    stop = data.get("stop") or []
    options = data.get("stream_options")
    if not isinstance(options, dict):
        options = {}
    return GenRequest(
        api=api,
        prompt=prompt,
        n_predict=int(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) else -1,
        ignore_eos=bool(data.get("ignore_eos", False)),
        cache_prompt=bool(data.get("cache_prompt", True)),
        stream=bool(data.get("stream", False)),
        include_usage=bool(options.get("include_usage", False)),
        stop=[stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str) and s],
        body=data,
    )
