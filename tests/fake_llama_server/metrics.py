"""The counters behind /metrics and their Prometheus text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

# Name, type and help of every metric, in the order the real server prints them.
METRICS = (
    ("prompt_tokens_total", "counter", "Number of prompt tokens processed, excluding cached tokens"),
    ("prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache"),
    ("prompt_seconds_total", "counter", "Total time spent processing prompts"),
    ("tokens_predicted_total", "counter", "Number of generation tokens processed"),
    ("tokens_predicted_seconds_total", "counter", "Total time spent generating tokens"),
    (
        "n_decode_total",
        "counter",
        "Total number of llama_decode() calls, excluding speculative decoding and multimodal decoding",
    ),
    ("n_tokens_max", "counter", "Largest observed sequence length (prompt + generation)"),
    ("spec_decode_num_draft_tokens_total", "counter", "Speculative: Total draft tokens generated"),
    (
        "spec_decode_num_accepted_tokens_total",
        "counter",
        "Speculative: Total draft tokens accepted by the target model",
    ),
    ("spec_decode_num_drafts_total", "counter", "Speculative: Total speculative decoding verification steps"),
    ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s"),
    ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s"),
    ("requests_processing", "gauge", "Number of requests processing"),
    ("requests_deferred", "gauge", "Number of requests deferred"),
    ("n_busy_slots_per_decode", "gauge", "Average number of busy slots per llama_decode() call"),
)


@dataclass
class Metrics:
    """The counters behind /metrics; the `window_*` fields cover the time since the previous scrape."""

    prompt_tokens_total: int = 0
    prompt_tokens_cached_total: int = 0
    prompt_seconds_total: float = 0.0
    tokens_predicted_total: int = 0
    tokens_predicted_seconds_total: float = 0.0
    n_decode_total: int = 0
    n_busy_slots_total: int = 0
    n_tokens_max: int = 0
    window_prompt_tokens: int = 0
    window_prompt_seconds: float = 0.0
    window_predicted_tokens: int = 0
    window_predicted_seconds: float = 0.0

    def add_prompt(self, processed: int, cached: int, seconds: float) -> None:
        self.prompt_tokens_total += processed
        self.prompt_tokens_cached_total += cached
        self.prompt_seconds_total += seconds
        self.window_prompt_tokens += processed
        self.window_prompt_seconds += seconds

    def add_generated(self, tokens: int, seconds: float) -> None:
        self.tokens_predicted_total += tokens
        self.tokens_predicted_seconds_total += seconds
        self.window_predicted_tokens += tokens
        self.window_predicted_seconds += seconds

    def decode(self, busy_slots: int, n_tokens: int, calls: int = 1) -> None:
        self.n_decode_total += calls
        self.n_busy_slots_total += busy_slots * calls
        if n_tokens > self.n_tokens_max:
            self.n_tokens_max = n_tokens

    def render(self, processing: int, deferred: int) -> str:
        """Prometheus text exactly as llama-server prints it; resets the since-last-scrape averages."""
        values: Dict[str, float] = {
            "prompt_tokens_total": self.prompt_tokens_total,
            "prompt_tokens_cached_total": self.prompt_tokens_cached_total,
            "prompt_seconds_total": self.prompt_seconds_total,
            "tokens_predicted_total": self.tokens_predicted_total,
            "tokens_predicted_seconds_total": self.tokens_predicted_seconds_total,
            "n_decode_total": self.n_decode_total,
            "n_tokens_max": self.n_tokens_max,
            "spec_decode_num_draft_tokens_total": 0,
            "spec_decode_num_accepted_tokens_total": 0,
            "spec_decode_num_drafts_total": 0,
            "prompt_tokens_seconds": rate(self.window_prompt_tokens, self.window_prompt_seconds),
            "predicted_tokens_seconds": rate(self.window_predicted_tokens, self.window_predicted_seconds),
            "requests_processing": processing,
            "requests_deferred": deferred,
            "n_busy_slots_per_decode": self.n_busy_slots_total / max(self.n_decode_total, 1),
        }
        self.window_prompt_tokens = self.window_predicted_tokens = 0
        self.window_prompt_seconds = self.window_predicted_seconds = 0.0
        out = []
        for name, kind, text in METRICS:
            # `g` formatting gives the 6 significant digits of C++'s default ostream output.
            out.append(
                f"# HELP llamacpp:{name} {text}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {values[name]:g}\n"
            )
        return "".join(out)


def rate(tokens: float, seconds: float) -> float:
    return tokens / seconds if seconds > 0 else 0.0
