#!/usr/bin/env python3
"""A fake llama-server: llama.cpp's HTTP API, log lines and failure modes, without a model.

It answers like the real llama-server (recorded in the project's llama-server reference): the same
endpoints, JSON shapes, SSE chunks, Prometheus text, errors and exit codes. A deterministic word-level
tokenizer stands in for the model's, and "generation" cycles through fixed words at a set pace.
Extra flags make it slow, broken or stuck on purpose:

  --prompt-tps F          prefill speed in tokens/s (default 2000)
  --token-interval-ms F   gap between generated tokens (default 5; 0 = as fast as possible)
  --load-delay S          seconds of "loading model" (port open, everything answers 503)
  --fail-start            fail to load the model like llama.cpp does (exit 1)
  --crash-after N         die (exit 1) halfway through the completion request after the first N
  --hang-after N          completion requests after the first N stall forever halfway; the process lives
  --metrics-update M      `request` (default, like current llama.cpp builds): token counters move only
                          when a request ends; `token`: with every token

Standard library only (quick to start, no venv needed), for any python3 >= 3.10.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    # Start-up time matters (tests start many servers) and asyncio pulls in ssl, which nothing here
    # uses: asyncio runs without TLS support when `import ssl` fails. Only when run as the server,
    # so that importing this module (its unit tests) leaves ssl alone.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import string  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections import deque  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable, Deque, Dict, List, Optional, TextIO, Tuple  # noqa: E402

# --- constants ---------------------------------------------------------------------------------

BUILD_INFO = "b0-fake"
N_VOCAB = 49152  # SmolLM2's vocabulary size: token ids outside [0, N_VOCAB) are invalid
N_CTX_TRAIN = 8192  # what `-c 0` ("from the model") resolves to
AUTO_SLOTS = 4  # what `-np -1` (auto) resolves to
DEFAULT_N_GEN = 16  # tokens generated before "EOS" when a request sets no limit
KEEP_ALIVE_S = 5.0  # cpp-httplib's keep-alive timeout and request count per connection
KEEP_ALIVE_MAX = 100
# A token that comes out at most this late is booked at its scheduled time: the event loop's
# wake-up delay is delivery overhead, not "model" time. Later than that, the fake is overloaded
# and reports what really happened.
LATE_S = 0.002

SPECIAL_TOKENS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
# One token per word (with the space before it), digit, punctuation character, newline or run of
# other whitespace; special tokens are one token each and never take a space. Every character
# matches some alternative, so joining the pieces always gives back the text.
PIECE_RE = re.compile(
    r"<\|(?:endoftext|im_start|im_end)\|>"
    r"|'(?:s|t|re|ve|m|ll|d)(?![^\W\d_])"
    r"| ?[^\W\d_]+"
    r"|\d"
    r"| ?(?!<\|(?:endoftext|im_start|im_end)\|>)(?:[^\s\w]|_)"
    r"|\n"
    r"|[^\S\n]+(?!\S)"
    r"|[^\S\n]+"
)
# Words of the default chat template that SmolLM2's tokenizer splits, so that a one-word chat
# message is 31 prompt tokens here too.
SPLITS = {" SmolLM": (" Sm", "ol", "LM"), " Hugging": (" H", "ugging"), "assistant": ("ass", "istant")}
# The generated text: every piece is exactly one token of the tokenizer above.
WORDS = (
    " lorem ipsum dolor sit amet , consectetur adipiscing elit , sed do eiusmod tempor incididunt ut"
    " labore et dolore magna aliqua ."
).split(" ")[1:]
GEN_PIECES = [w if w in (",", ".") else " " + w for w in WORDS]

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

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
PUBLIC_PATHS = ("/health", "/v1/health")  # the only endpoints that need no API key


def dumps(obj: Any) -> str:
    """Compact JSON with raw UTF-8, as nlohmann::json prints it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def random_id(n: int) -> str:
    """n random letters and digits (os.urandom: importing `random` costs start-up time)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(alphabet[b % len(alphabet)] for b in os.urandom(n))


def error_body(code: int, message: str, kind: str, **extra: Any) -> Dict[str, Any]:
    return {"error": {"code": code, "message": message, "type": kind, **extra}}


# The real server orders these three error bodies differently from the rest.
LOADING_ERROR = {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}
AUTH_ERROR = {"error": {"message": "Invalid API Key", "type": "authentication_error", "code": 401}}
NOT_FOUND_ERROR = {"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}}


# --- logging -----------------------------------------------------------------------------------


class Log:
    """llama.cpp's log format: `M.SS.mmm.uuu L component func: message`, on stderr (and --log-file)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.file: Optional[TextIO] = None

    def stamp(self) -> str:
        us = int((time.monotonic() - self.t0) * 1e6)
        minutes, us = divmod(us, 60_000_000)
        seconds, us = divmod(us, 1_000_000)
        return f"{minutes}.{seconds:02d}.{us // 1000:03d}.{us % 1000:03d}"

    def line(self, level: str, text: str) -> None:
        out = f"{self.stamp()} {level} {text}\n"
        for stream in (sys.stderr, self.file):
            if stream is None:
                continue
            try:
                stream.write(out)
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed pipe or file must not take the server down

    def srv(self, level: str, func: str, msg: str) -> None:
        self.line(level, f"srv  {func:>12.12}: {msg}")

    def slot(self, level: str, func: str, slot_id: int, task: int, msg: str) -> None:
        self.line(level, f"slot {func:>12.12}: id {slot_id:>2} | task {task} | {msg}")


# --- tokenizer and chat template -----------------------------------------------------------------


class Vocab:
    """Deterministic tokenizer: a piece's id is a hash of its text, kept unique by probing.

    Ids are stable for as long as the process lives (so tokenize/detokenize round-trip), and across
    runs except for the rare pieces whose hash collided with a piece seen earlier.
    """

    FIRST_ID = len(SPECIAL_TOKENS)

    def __init__(self) -> None:
        self.id_of: Dict[str, int] = dict(SPECIAL_TOKENS)
        self.piece_of: Dict[int, str] = {tid: piece for piece, tid in SPECIAL_TOKENS.items()}
        self.json_of: Dict[int, str] = {}  # JSON-encoded pieces, for building stream chunks quickly

    def token_id(self, piece: str) -> int:
        tid = self.id_of.get(piece)
        return tid if tid is not None else self._assign(piece)

    def _assign(self, piece: str) -> int:
        span = N_VOCAB - self.FIRST_ID
        start = self.FIRST_ID + zlib.crc32(piece.encode("utf-8")) % span
        if len(self.piece_of) >= N_VOCAB:
            return start  # vocabulary full: tolerate a collision rather than grow without bound
        tid = start
        while tid in self.piece_of:
            tid = self.FIRST_ID + (tid - self.FIRST_ID + 1) % span
        self.id_of[piece] = tid
        self.piece_of[tid] = piece
        return tid

    def pieces(self, text: str) -> List[str]:
        out: List[str] = []
        for piece in PIECE_RE.findall(text):
            split = SPLITS.get(piece)
            if split is None:
                out.append(piece)
            else:
                out.extend(split)
        return out

    def tokenize(self, text: str) -> List[int]:
        get = self.id_of.get
        out = []
        for piece in self.pieces(text):
            tid = get(piece)
            out.append(tid if tid is not None else self._assign(piece))
        return out

    def piece(self, tid: int) -> str:
        """The text of a token; an id never produced by the tokenizer gets a made-up one-token word."""
        piece = self.piece_of.get(tid)
        if piece is None:
            letters, n = [], tid
            while True:
                n, r = divmod(n, 26)
                letters.append(string.ascii_lowercase[r])
                if n == 0:
                    break
            piece = " q" + "".join(letters)
            self.piece_of[tid] = piece
            self.id_of.setdefault(piece, tid)
        return piece

    def piece_json(self, tid: int) -> str:
        cached = self.json_of.get(tid)
        if cached is None:
            cached = self.json_of[tid] = dumps(self.piece(tid))
        return cached

    def detokenize(self, tokens: List[int]) -> str:
        return "".join(self.piece(t) for t in tokens)


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


# --- command line ------------------------------------------------------------------------------


@dataclass
class Options:
    model: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    ctx_size: int = 4096
    threads: int = -1
    threads_batch: int = -1
    batch_size: int = 2048
    ubatch_size: int = 512
    parallel: int = -1
    n_gpu_layers: int = -1
    flash_attn: str = "auto"
    metrics: bool = False
    slots: bool = True
    webui: bool = True
    api_keys: List[str] = field(default_factory=list)
    alias: str = ""
    log_file: str = ""
    timeout: int = 3600
    # behaviour knobs of the fake
    prompt_tps: float = 2000.0
    token_interval_ms: float = 5.0
    load_delay: float = 0.0
    fail_start: bool = False
    crash_after: Optional[int] = None
    hang_after: Optional[int] = None
    metrics_update: str = "request"
    # --help / --version
    action: str = ""

    @property
    def n_slots(self) -> int:
        return self.parallel if self.parallel > 0 else AUTO_SLOTS

    @property
    def n_ctx(self) -> int:
        return self.ctx_size if self.ctx_size > 0 else N_CTX_TRAIN


@dataclass
class Flag:
    names: Tuple[str, ...]
    dest: str
    kind: str  # "str", "int", "float", "on" (sets True), "off" (sets False), "keys", "fa", "update", "action"
    metavar: str
    help: str


FLAGS = [
    Flag(("-h", "--help", "--usage"), "action", "action", "", "print usage and exit"),
    Flag(("--version",), "action", "action", "", "show version and build info"),
    Flag(("-m", "--model"), "model", "str", "FNAME", "model path to load"),
    Flag(("--host",), "host", "str", "HOST", "IP address to listen on (default: 127.0.0.1)"),
    Flag(("--port",), "port", "int", "PORT", "port to listen (default: 8080)"),
    Flag(("-c", "--ctx-size"), "ctx_size", "int", "N", "size of the prompt context (default: 4096, 0 = from model)"),
    Flag(("-t", "--threads"), "threads", "int", "N", "number of CPU threads (default: -1)"),
    Flag(("-tb", "--threads-batch"), "threads_batch", "int", "N", "threads for batch processing"),
    Flag(("-b", "--batch-size"), "batch_size", "int", "N", "logical maximum batch size (default: 2048)"),
    Flag(("-ub", "--ubatch-size"), "ubatch_size", "int", "N", "physical maximum batch size (default: 512)"),
    Flag(("-np", "--parallel"), "parallel", "int", "N", "number of server slots (default: -1, -1 = auto)"),
    Flag(("-ngl", "--gpu-layers", "--n-gpu-layers"), "n_gpu_layers", "int", "N", "layers to store in VRAM"),
    Flag(("-fa", "--flash-attn"), "flash_attn", "fa", "[on|off|auto]", "set Flash Attention use"),
    Flag(("--metrics",), "metrics", "on", "", "enable prometheus compatible metrics endpoint"),
    Flag(("--slots",), "slots", "on", "", "expose slots monitoring endpoint (default: enabled)"),
    Flag(("--no-slots",), "slots", "off", "", "disable the slots monitoring endpoint"),
    Flag(("--webui", "--ui"), "webui", "on", "", "enable the Web UI"),
    Flag(("--no-webui", "--no-ui"), "webui", "off", "", "disable the Web UI"),
    Flag(("--api-key",), "api_keys", "keys", "KEY", "API key(s) for authentication, comma-separated"),
    Flag(("-a", "--alias"), "alias", "str", "STRING", "model name to be used by the API"),
    Flag(("--log-file",), "log_file", "str", "FNAME", "log to file"),
    Flag(("-to", "--timeout"), "timeout", "int", "N", "server read/write timeout in seconds (default: 3600)"),
    Flag(("--prompt-tps",), "prompt_tps", "float", "F", "fake: prompt processing speed, tokens/s (default: 2000)"),
    Flag(("--token-interval-ms",), "token_interval_ms", "float", "F", "fake: ms between tokens (default: 5)"),
    Flag(("--load-delay",), "load_delay", "float", "S", "fake: seconds spent loading the model (default: 0)"),
    Flag(("--fail-start",), "fail_start", "on", "", "fake: fail to load the model and exit 1"),
    Flag(("--crash-after",), "crash_after", "int", "N", "fake: exit 1 midway through completion request N+1"),
    Flag(("--hang-after",), "hang_after", "int", "N", "fake: completion requests after N stall forever"),
    Flag(("--metrics-update",), "metrics_update", "update", "token|request", "fake: when counters move"),
]
FLAG_BY_NAME = {name: flag for flag in FLAGS for name in flag.names}
FA_VALUES = ("on", "off", "auto")


class UsageError(Exception):
    """A bad value for a known flag: llama.cpp prints an error and exits 1."""


def looks_like_flag(arg: str) -> bool:
    if not arg.startswith("-") or arg == "-":
        return False
    try:
        float(arg)
        return False  # a negative number is a value
    except ValueError:
        return True


def convert(flag: Flag, value: str) -> Any:
    if flag.kind == "int":
        return int(value)
    if flag.kind == "float":
        return float(value)
    if flag.kind == "keys":
        return [key for key in value.split(",") if key]
    if flag.kind == "update" and value not in ("token", "request"):
        raise ValueError(f"expected token or request, got '{value}'")
    return value


def parse_args(argv: List[str], log: Log) -> Options:
    """llama-server's flags (the ones that matter here); unknown flags are ignored with a warning."""
    opts = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        name, has_inline, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        flag = FLAG_BY_NAME.get(name)
        if flag is None:
            # Skip the unknown flag's value too, so it is not mistaken for something else.
            skipped = ""
            if looks_like_flag(arg) and not has_inline and i < len(argv) and not looks_like_flag(argv[i]):
                skipped = f" (and its value '{argv[i]}')"
                i += 1
            log.srv("W", "main", f"ignoring unknown argument '{arg}'{skipped} (fake llama-server)")
            continue
        if flag.kind == "action":
            opts.action = opts.action or ("version" if name == "--version" else "help")
        elif flag.kind in ("on", "off"):
            setattr(opts, flag.dest, flag.kind == "on")
        elif flag.kind == "fa":
            # Older builds had a bare `-fa` switch; newer ones take on|off|auto.
            if has_inline:
                opts.flash_attn = inline
            elif i < len(argv) and argv[i] in FA_VALUES:
                opts.flash_attn = argv[i]
                i += 1
            else:
                opts.flash_attn = "on"
        else:
            if not has_inline and i >= len(argv):
                raise UsageError(f'error while handling argument "{name}": expected value for argument')
            value = inline if has_inline else argv[i]
            i += 0 if has_inline else 1
            try:
                setattr(opts, flag.dest, convert(flag, value))
            except ValueError as exc:
                raise UsageError(f'error while handling argument "{name}": {exc}') from None
    return opts


def usage() -> str:
    lines = ["----- fake llama-server -----", ""]
    for flag in FLAGS:
        names = ", ".join(flag.names)
        head = f"{names} {flag.metavar}".rstrip()
        lines.append(f"{head:<40}{flag.help}")
    return "\n".join(lines) + "\n"


# --- server state ------------------------------------------------------------------------------


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


@dataclass
class Task:
    """Progress of the request a slot is processing, as /slots shows it."""

    id: int
    n_prompt: int  # all prompt tokens, cached ones included
    n_cache: int
    limit: int  # -1: no limit
    prefill_start: float
    prefill_end: float
    n_decoded: int = 0


@dataclass
class Slot:
    id: int
    n_ctx: int
    used: bool = False  # a slot that never ran a task shows the short /slots entry, like the real server
    busy: bool = False
    id_task: int = -1
    t_last: float = -1.0
    cache: List[int] = field(default_factory=list)  # tokens left in this slot's KV cache
    params: Dict[str, Any] = field(default_factory=dict)
    task: Optional[Task] = None

    def view(self, now: float, prompt_tps: float) -> Dict[str, Any]:
        base: Dict[str, Any] = {"id": self.id, "n_ctx": self.n_ctx, "speculative": False, "is_processing": self.busy}
        if not self.used:
            return base
        task = self.task
        if task is None:
            n_prompt = processed = cached = decoded = 0
            nxt = {"has_next_token": False, "has_new_line": False, "n_remain": -1, "n_decoded": 0}
        else:
            n_prompt, cached, decoded = task.n_prompt + task.n_decoded, task.n_cache, task.n_decoded
            todo = task.n_prompt - task.n_cache
            # Prompt processing advances over time, as the real slot's batches do.
            done = todo if now >= task.prefill_end else int((now - task.prefill_start) * prompt_tps)
            processed = max(0, min(todo, done))
            remain = task.limit - decoded if task.limit >= 0 else -1
            nxt = {"has_next_token": True, "has_new_line": False, "n_remain": remain, "n_decoded": decoded}
        return base | {
            "id_task": self.id_task,
            "n_prompt_tokens": n_prompt,
            "n_prompt_tokens_processed": processed,
            "n_prompt_tokens_cache": cached,
            "params": self.params,
            "next_token": [nxt],
        }


def common_prefix(a: List[int], b: List[int]) -> int:
    """Length of the shared prefix; bisects with slice comparisons, which run in C."""
    lo, hi = 0, min(len(a), len(b))
    if hi == 0 or a[0] != b[0]:
        return 0
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class SlotPool:
    """The server's slots; requests beyond them wait in FIFO order (llama.cpp's deferred queue)."""

    def __init__(self, n_slots: int, n_ctx: int) -> None:
        self.slots = [Slot(i, n_ctx) for i in range(n_slots)]
        self.waiters: Deque[asyncio.Future] = deque()
        self.busy = 0  # kept as a count: it is read for every generated token

    @property
    def deferred(self) -> int:
        return len(self.waiters)

    def pick(self, prompt: List[int], use_cache: bool) -> Tuple[Optional[Slot], str]:
        """Like llama.cpp: the free slot whose cache shares most of the prompt, else the least recently used."""
        free = [s for s in self.slots if not s.busy]
        if not free:
            return None, ""
        if use_cache and prompt:
            best, best_len = None, 0
            for slot in free:
                n = common_prefix(slot.cache, prompt)
                if n > best_len:
                    best, best_len = slot, n
            if best is not None and best_len / len(prompt) > 0.1:
                return (
                    best,
                    f"selected slot by LCP similarity, f_sim_best = {best_len / len(prompt):.3f} (> 0.100 thold)",
                )
        lru = min(free, key=lambda s: (s.t_last, -s.id))
        return lru, f"selected slot by LRU, t_last = {int(lru.t_last * 1e6) if lru.t_last >= 0 else -1}"

    async def acquire(self, prompt: List[int], use_cache: bool, gone: Callable[[], bool]) -> Tuple[Slot, str, bool]:
        """(slot, why it was chosen, whether the request had to wait for it).

        A waiting request whose client hangs up leaves the queue (ClientGone), as in llama.cpp.
        """
        if not self.waiters:
            slot, why = self.pick(prompt, use_cache)
            if slot is not None:
                slot.busy = True
                self.busy += 1
                return slot, why, False
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            while not fut.done():
                await asyncio.wait([fut], timeout=0.2)
                if not fut.done() and gone():
                    raise ClientGone()
        except (asyncio.CancelledError, ClientGone):
            if fut.done() and not fut.cancelled():
                self.release(fut.result())  # handed a slot just as we gave up: pass it on
            else:
                fut.cancel()
                if fut in self.waiters:
                    self.waiters.remove(fut)
            raise
        return fut.result(), "selected slot freed by a finished task", True

    def release(self, slot: Slot) -> None:
        slot.task = None
        slot.t_last = time.monotonic()
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(slot)  # handed straight to the oldest waiter: it stays busy
                return
        slot.busy = False
        self.busy -= 1


# --- generation requests -----------------------------------------------------------------------

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


@dataclass
class Job:
    """One completion in progress: the request, its slot and what it has produced so far."""

    gen: GenRequest
    slot: Slot
    task: Task
    out: Outcome
    fmt: ApiFormat
    stream: EventStream
    n_gen: int  # tokens to generate, from the limit, the context room and the fake EOS
    fault: str = ""  # "crash" or "hang" halfway, from --crash-after / --hang-after
    t_first: float = 0.0  # when prefill ended and the first token was ready
    t_last: float = 0.0  # when the last token came out
    generated: List[int] = field(default_factory=list)
    text: List[str] = field(default_factory=list)


# --- HTTP --------------------------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: int, payload: Dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload


class ClientGone(Exception):
    """The client closed its connection; the request is cancelled, like llama.cpp does."""


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, str]
    version: str
    headers: Dict[str, str]
    body: bytes
    arrival: float  # monotonic time when the whole request had arrived

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return conn == "keep-alive"
        return conn != "close"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    extra_headers: List[Tuple[str, str]] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Optional[Request]:
    """One HTTP/1.x request; None when the client closed the connection between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    path, _, query_text = target.partition("?")
    query = dict(pair.partition("=")[::2] for pair in query_text.split("&") if pair)
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits a second for this on large bodies
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await read_chunked(reader)
    else:
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length > 0 else b""
    return Request(method, path, query, version.strip(), headers, body, time.monotonic())


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: List[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def json_response(status: int, obj: Any) -> Response:
    return Response(status, dumps(obj).encode("utf-8"))


def response_head(status: int, headers: List[Tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def connection_header(keep_alive: bool) -> Tuple[str, str]:
    return (
        ("Keep-Alive", f"timeout={int(KEEP_ALIVE_S)}, max={KEEP_ALIVE_MAX}") if keep_alive else ("Connection", "close")
    )


class EventStream:
    """Server-sent events over chunked transfer encoding, one HTTP chunk per event like cpp-httplib."""

    def __init__(
        self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep_alive: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.chunked = req.version != "HTTP/1.0"
        self.keep_alive = keep_alive and self.chunked
        self.started = False
        self.origin = req.headers.get("origin", "")

    def start(self) -> None:
        headers = [("Server", "llama.cpp"), ("Access-Control-Allow-Origin", self.origin)]
        headers += [("X-Accel-Buffering", "no"), ("Content-Type", "text/event-stream")]
        if self.chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        headers.append(connection_header(self.keep_alive))
        self.writer.write(response_head(200, headers))
        self.started = True

    def gone(self) -> bool:
        """The client hung up (llama.cpp then cancels the request)."""
        return self.writer.transport.is_closing() or self.reader.at_eof()

    def send(self, event: str) -> None:
        data = f"data: {event}\n\n".encode("utf-8")
        self.writer.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)

    def finish(self) -> None:
        if self.chunked:
            self.writer.write(b"0\r\n\r\n")


# --- the server --------------------------------------------------------------------------------


class FakeServer:
    def __init__(self, opts: Options, log: Log) -> None:
        self.opts = opts
        self.log = log
        self.vocab = Vocab()
        self.gen_ids = [self.vocab.token_id(p) for p in GEN_PIECES]
        self.pool = SlotPool(opts.n_slots, opts.n_ctx)
        self.metrics = Metrics()
        self.loaded = False
        self.next_task = 0
        self.completions_seen = 0
        self.start_time = time.time()
        self.model_name = opts.alias or opts.model or "fake-model"
        self.media_marker = "<__media_" + random_id(32) + "__>"
        self.interval = max(0.0, opts.token_interval_ms) / 1000.0
        self.per_token_metrics = opts.metrics_update == "token"
        self.routes: Dict[Tuple[str, str], Callable[[Request, EventStream], Any]] = {
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

    # -- connections ----------------------------------------------------------------------------

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for count in range(KEEP_ALIVE_MAX):
                try:
                    req = await asyncio.wait_for(read_request(reader, writer), KEEP_ALIVE_S)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                    break
                if req is None:
                    break
                last = count == KEEP_ALIVE_MAX - 1
                if not await self.handle(req, reader, writer, req.keep_alive and not last):
                    break
        except (ConnectionError, ClientGone):
            pass
        finally:
            writer.close()

    async def handle(
        self, req: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep_alive: bool
    ) -> bool:
        """Serve one request; False when the connection must close afterwards."""
        stream = EventStream(req, reader, writer, keep_alive)
        try:
            resp = await self.route(req, stream)
        except HttpError as exc:
            resp = json_response(exc.status, exc.payload)
        except (ClientGone, ConnectionError):
            raise
        except Exception as exc:  # a bug in the fake: answer like llama.cpp's exception handler
            self.log.srv("E", "operator()", f"got exception: {exc!r}")
            resp = json_response(500, error_body(500, str(exc), "server_error"))
        if resp is None:  # streamed
            if stream.started:
                stream.finish()
                await writer.drain()
            return stream.keep_alive
        if resp.status >= 400:
            keep_alive = False  # cpp-httplib closes the connection after an error status
        headers = [("Server", "llama.cpp"), ("Access-Control-Allow-Origin", req.headers.get("origin", ""))]
        headers += resp.extra_headers
        headers += [("Content-Type", resp.content_type), ("Content-Length", str(len(resp.body)))]
        headers.append(connection_header(keep_alive))
        writer.write(response_head(resp.status, headers) + resp.body)
        await writer.drain()
        return keep_alive

    async def route(self, req: Request, stream: EventStream) -> Optional[Response]:
        if req.method == "OPTIONS":  # CORS preflight
            allow = [("Access-Control-Allow-Credentials", "true")]
            allow += [("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")]
            allow += [("Access-Control-Allow-Headers", "*")]
            return Response(200, b"", "text/html", allow)
        if not self.loaded:
            return json_response(503, LOADING_ERROR)
        if self.opts.api_keys and req.path not in PUBLIC_PATHS and not self.authorized(req):
            self.log.srv("W", "operator()", "unauthorized: Invalid API Key")
            return json_response(401, AUTH_ERROR)
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            return json_response(404, NOT_FOUND_ERROR)
        return await handler(req, stream)

    def authorized(self, req: Request) -> bool:
        auth = req.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else req.headers.get("x-api-key", "")
        return key in self.opts.api_keys

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
            tokens = self.prompt_tokens(content)
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

    def prompt_tokens(self, prompt: Any) -> List[int]:
        """A prompt string, token ids, or a mix of both (one prompt; lists of prompts are not supported)."""
        if isinstance(prompt, str):
            return self.vocab.tokenize(prompt)
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            return self.prompt_tokens(prompt[0])
        if isinstance(prompt, list) and not all(isinstance(p, str) for p in prompt) or prompt == []:
            tokens: List[int] = []
            for part in prompt:
                if isinstance(part, str):
                    tokens += self.vocab.tokenize(part)
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

    def parse_generation(self, api: str, data: Dict[str, Any]) -> GenRequest:
        if api == "chat":
            prompt = self.vocab.tokenize(apply_chat_template(data.get("messages")))
        else:
            if "prompt" not in data:
                msg = "[json.exception.out_of_range.403] key 'prompt' not found"
                raise HttpError(400, error_body(400, msg, "invalid_request_error"))
            prompt = self.prompt_tokens(data["prompt"])
        if any(not 0 <= t < N_VOCAB for t in prompt):
            raise HttpError(400, error_body(400, "Prompt contains invalid tokens", "invalid_request_error"))
        n_ctx = self.opts.n_ctx
        if len(prompt) >= n_ctx:
            msg = (
                f"request ({len(prompt)} tokens) exceeds the available context size ({n_ctx} tokens), try increasing it"
            )
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

    def completion_api(self, api: str) -> Callable[[Request, EventStream], Any]:
        async def handler(req: Request, stream: EventStream) -> Optional[Response]:
            gen = self.parse_generation(api, self.json_body(req))
            return await self.complete(req, gen, stream)

        return handler

    def plan(self, gen: GenRequest) -> Tuple[int, str, bool]:
        """(tokens to generate, stop type, truncated) from the limit, the context room and the fake EOS."""
        n_prompt = len(gen.prompt)
        if n_prompt == 0:
            return 0, "none", False
        room = self.opts.n_ctx - n_prompt
        limit = max(gen.n_predict, 1) if gen.n_predict >= 0 else -1  # llama.cpp decodes one token for 0
        if limit < 0 and not gen.ignore_eos:
            want, stop_type = DEFAULT_N_GEN, "eos"
        else:
            want, stop_type = (limit if limit >= 0 else room), "limit"
        if want > room:
            return room, "limit", True
        return want, stop_type, False

    async def complete(self, req: Request, gen: GenRequest, stream: EventStream) -> Optional[Response]:
        """Run one completion in a slot: queue, prefill, generate, answer (streamed or not)."""
        ordinal = self.completions_seen
        self.completions_seen += 1
        fault = ""
        if self.opts.crash_after is not None and ordinal >= self.opts.crash_after >= 0:
            fault = "crash"
        elif self.opts.hang_after is not None and ordinal >= self.opts.hang_after >= 0:
            fault = "hang"
        task_id = self.next_task
        self.next_task += 1
        slot, why, waited = await self.pool.acquire(gen.prompt, gen.cache_prompt, stream.gone)
        try:
            self.log.slot("I", "get_available_slot", slot.id, -1, why)
            self.log.slot("I", "launch_slot_with_task", slot.id, task_id, "processing task, is_child = 0")
            # Prefill runs from arrival (or from when a slot freed up): an absolute schedule.
            job = self.start_job(
                gen, slot, task_id, stream, asyncio.get_running_loop().time() if waited else req.arrival
            )
            job.fault = fault
            await self.prefill(job)
            try:
                await self.generate(job)
            finally:
                self.finish_job(job)
        finally:
            self.pool.release(slot)
        if gen.stream:
            for event in job.fmt.final_events(job.out):
                stream.send(event)
            return None
        return json_response(200, job.fmt.body(job.out))

    def start_job(self, gen: GenRequest, slot: Slot, task_id: int, stream: EventStream, t_start: float) -> Job:
        n_prompt = len(gen.prompt)
        # llama.cpp always evaluates at least the last prompt token, even when all of it is cached.
        n_cache = min(common_prefix(slot.cache, gen.prompt), max(n_prompt - 1, 0)) if gen.cache_prompt else 0
        n_gen, stop_type, truncated = self.plan(gen)
        tps = self.opts.prompt_tps
        t_first = t_start + (n_prompt - n_cache) / tps if tps > 0 else t_start
        task = Task(task_id, n_prompt, n_cache, gen.n_predict, t_start, t_first)
        slot.used, slot.id_task, slot.task, slot.params = True, task_id, task, gen.params(full=False)
        out = Outcome(n_prompt=n_prompt, n_cache=n_cache, slot_id=slot.id, stop_type=stop_type, truncated=truncated)
        return Job(gen, slot, task, out, ApiFormat(gen, self.model_name, self.vocab), stream, n_gen)

    async def prefill(self, job: Job) -> None:
        """Wait out prompt processing; the first token is ready when it ends."""
        loop = asyncio.get_running_loop()
        task, out = job.task, job.out
        delay = task.prefill_end - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if job.stream.gone():
            raise ClientGone()
        now = loop.time()
        job.t_first = task.prefill_end if now - task.prefill_end < LATE_S else now
        n_processed = task.n_prompt - task.n_cache
        if task.n_prompt:
            out.prompt_ms = (job.t_first - task.prefill_start) * 1e3
            self.metrics.add_prompt(n_processed, task.n_cache, job.t_first - task.prefill_start)
            batches = -(-n_processed // max(self.opts.batch_size, 1))
            self.metrics.decode(self.pool.busy, task.n_prompt, calls=batches)
        if job.gen.stream:
            job.stream.start()
            for event in job.fmt.first_events():
                job.stream.send(event)

    async def generate(self, job: Job) -> None:
        """Emit the tokens on an absolute schedule: token k is due at t_first + k * interval.

        Sleeping to deadlines (not for intervals) keeps the cadence from drifting; at interval 0 each
        token still yields to the event loop so that concurrent streams interleave. Timings and
        metrics use the scheduled times (see LATE_S).
        """
        loop = asyncio.get_running_loop()
        gen, task, out, stream, fmt = job.gen, job.task, job.out, job.stream, job.fmt
        metrics, pool, per_token, interval = self.metrics, self.pool, self.per_token_metrics, self.interval
        ids, n_words = self.gen_ids, len(self.gen_ids)
        offset = task.n_prompt % n_words  # vary the text a little with the prompt, deterministically
        fault_at = job.n_gen // 2 if job.fault else -1
        deadline = t_prev = job.t_first
        for k in range(job.n_gen):
            if k == fault_at:
                await self.fault(job.fault, task.id)
            if k:
                deadline += interval
                delay = deadline - loop.time()
                await asyncio.sleep(delay if delay > 0 else 0)
            if stream.gone():
                raise ClientGone()
            now = loop.time()
            if interval and now - deadline < LATE_S:
                now = deadline
            word = (offset + k) % n_words
            if gen.stop and self.hits_stop(gen.stop, job.text, GEN_PIECES[word], out):
                out.n_decoded += 1
                return
            job.generated.append(ids[word])
            job.text.append(GEN_PIECES[word])
            out.n_decoded = task.n_decoded = k + 1
            if per_token:
                metrics.add_generated(1, now - t_prev)
            if k:
                metrics.decode(pool.busy, task.n_prompt + k + 1)
            t_prev = job.t_last = now
            if gen.stream:
                stream.send(fmt.token_event(ids[word], k + 1, task.n_prompt))
                if stream.writer.transport.get_write_buffer_size() > 65536:
                    await stream.writer.drain()  # a slow reader: stop producing until it catches up
        if job.n_gen == fault_at:
            await self.fault(job.fault, task.id)
        out.content = "".join(job.text)

    def finish_job(self, job: Job) -> None:
        """Timings, end-of-request metrics, the slot's KV cache and the log lines, on every path."""
        out = job.out
        out.predicted_ms = (job.t_last - job.t_first) * 1e3 if out.n_decoded > 1 else 0.001 * bool(out.n_decoded)
        if not self.per_token_metrics:
            self.metrics.add_generated(out.n_decoded, out.predicted_ms / 1e3)
        # The KV cache keeps the prompt and every generated token but the last (never decoded).
        job.slot.cache = job.gen.prompt + job.generated[:-1]
        out.tokens_cached = len(job.slot.cache)
        self.log_timings(job.slot.id, job.task.id, out)

    @staticmethod
    def hits_stop(stops: List[str], parts: List[str], piece: str, out: Outcome) -> bool:
        """Stop strings end generation before the token that completes them, like stop_type `word`."""
        # Every piece has at least one character, so the last len(word) pieces hold any new match.
        n = max(len(w) for w in stops)
        tail = "".join(parts[-n:]) + piece
        for word in stops:
            pos = tail.find(word)
            if pos >= 0:
                out.content = "".join(parts[:-n]) + tail[:pos]
                out.stop_type, out.stopping_word = "word", word
                return True
        return False

    async def fault(self, kind: str, task_id: int) -> None:
        if kind == "crash":
            self.log.srv("E", "update_slots", f"task {task_id}: crashing on purpose (--crash-after)")
            os._exit(1)
        self.log.srv("W", "update_slots", f"task {task_id}: hanging on purpose (--hang-after)")
        await asyncio.get_running_loop().create_future()  # never completes; the slot stays busy

    def log_timings(self, slot_id: int, task_id: int, out: Outcome) -> None:
        t = out.timings()
        total_ms = out.prompt_ms + out.predicted_ms
        log = self.log.slot
        log(
            "I",
            "print_timing",
            slot_id,
            task_id,
            f"prompt eval time = {out.prompt_ms:10.2f} ms / {t['prompt_n']:5d} tokens "
            f"({t['prompt_per_token_ms']:8.2f} ms per token, {t['prompt_per_second']:8.2f} tokens per second)",
        )
        log(
            "I",
            "print_timing",
            slot_id,
            task_id,
            f"       eval time = {out.predicted_ms:10.2f} ms / {out.n_decoded:5d} tokens "
            f"({t['predicted_per_token_ms']:8.2f} ms per token, {t['predicted_per_second']:8.2f} tokens per second)",
        )
        log(
            "I",
            "print_timing",
            slot_id,
            task_id,
            f"      total time = {total_ms:10.2f} ms / {t['prompt_n'] + out.n_decoded:5d} tokens",
        )
        log(
            "I",
            "release",
            slot_id,
            task_id,
            f"stop processing: n_tokens = {out.tokens_cached}, truncated = {int(out.truncated)}",
        )

    # -- life cycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        opts, log = self.opts, self.log
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        log.srv("I", "llama_server", "initializing ...")
        if not opts.api_keys:
            log.srv("W", "llama_server", "security: no API key is set and CORS allows all origins")
        if opts.model and not os.path.isfile(opts.model):
            log.srv("I", "load_model", f"loading model '{opts.model}'")
            return self.fail_load("No such file or directory")
        try:
            server = await asyncio.start_server(self.connection, opts.host, opts.port, backlog=1024)
        except OSError as exc:
            log.srv("E", "llama_server", f"couldn't bind HTTP server socket, hostname: {opts.host}, port: {opts.port}")
            log.srv("E", "llama_server", f"exiting due to HTTP server error ({exc.strerror})")
            return 1
        # The port is open while the model loads: every endpoint answers 503 until then.
        log.srv("I", "load_model", f"loading model '{opts.model}'")
        if self.model_is_not_gguf():
            log.line("W", f"gguf_init_from_file: '{opts.model}' is not a GGUF file (the fake server loads it anyway)")
        loading = asyncio.ensure_future(asyncio.sleep(max(0.0, opts.load_delay)))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            if opts.fail_start:
                server.close()
                return self.fail_load("fake llama-server started with --fail-start")
            n_slots, n_ctx = len(self.pool.slots), opts.n_ctx
            log.srv("I", "load_model", f"initializing, n_slots = {n_slots}, n_ctx_slot = {n_ctx}, kv_unified = 'true'")
            self.loaded = True
            log.srv("I", "llama_server", "model loaded")
            log.srv("I", "llama_server", f"listening on http://{opts.host}:{opts.port}")
            await stopping
        log.srv("I", "operator()", "operator(): cleaning up before exit...")
        return 0

    def model_is_not_gguf(self) -> bool:
        if not self.opts.model:
            return False
        try:
            with open(self.opts.model, "rb") as fh:
                return fh.read(4) != b"GGUF"
        except OSError:
            return False

    def fail_load(self, reason: str) -> int:
        """The lines llama.cpp prints when a model cannot be loaded; the exit code is 1."""
        path, log = self.opts.model, self.log
        log.line("E", f"gguf_init_from_file: failed to open GGUF file '{path}' ({reason})")
        log.line("E", f"llama_model_load: error loading model: llama_model_loader: failed to load model from {path}")
        log.line("E", "llama_model_load_from_file_impl: failed to load model")
        log.line("E", f"cmn  common_init_: failed to load model '{path}'")
        log.srv("E", "load_model", f"failed to load model, '{path}'")
        log.srv("I", "operator()", "operator(): cleaning up before exit...")
        log.srv("E", "llama_server", "exiting due to model loading error")
        return 1


def set_process_name(name: str) -> None:
    """Make ps/psutil name this process like the real binary (Python's own name is python3.x).

    Writing /proc/self/comm is what prctl(PR_SET_NAME) does for the calling (main) thread, without
    the cost of importing ctypes; prctl is the fallback. Best effort: other systems keep the name.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        with open("/proc/self/comm", "w", encoding="utf-8") as fh:
            fh.write(name)
        return
    except OSError:
        pass
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode(), 0, 0, 0)  # 15 = PR_SET_NAME
    except (OSError, AttributeError):
        pass


def main(argv: Optional[List[str]] = None) -> int:
    set_process_name("llama-server")
    log = Log()
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv, log)
    except UsageError as exc:
        print(f"{exc}\n\nto show complete usage, run with -h", file=sys.stderr)
        return 1
    if opts.action == "version":
        print(f"version: 0 (fake)\nbuilt with fake for {sys.platform}", file=sys.stderr)
        return 0
    if opts.action == "help":
        sys.stdout.write(usage())
        return 0
    if opts.log_file:
        try:
            log.file = open(opts.log_file, "w", encoding="utf-8")
        except OSError as exc:
            log.line("E", f"failed to open log file '{opts.log_file}': {exc.strerror}")
    # Not asyncio.run(): on the way out it would cancel and await every connection. Like llama-server,
    # exit at once and drop in-flight requests, including stalled ones.
    code = asyncio.new_event_loop().run_until_complete(FakeServer(opts, log).run())
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
