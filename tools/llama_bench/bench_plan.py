"""What a benchmark run is made of: parameters, what the server told us (probe), the cells
(prompt size x concurrency) with the ones that cannot run skipped, and the request bodies."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from .client import API_COMPLETION, API_OPENAI_CHAT, API_OPENAI_COMPLETIONS, RequestRecord
from .http import HttpClient, HttpError
from .utils import UserError
from .workload import PromptFactory, ServerTokenizer


@dataclass
class BenchParams:
    """Everything that defines a run (stored in the result so it can be repeated)."""

    endpoint: str
    prompt_sizes: List[int]
    concurrency: List[int]
    max_output_tokens: int
    api: Optional[str] = None  # None: /completion for llama.cpp, chat otherwise
    api_key: Optional[str] = None
    num_requests: Optional[int] = None
    repeats: int = 3
    temperature: float = 0.0
    request_rate: Optional[float] = None
    warmup: int = 1
    seed: int = 0
    task: str = "coding"
    api_model: Optional[str] = None
    timeout: float = 300.0
    probe_timeout: float = 10.0
    strict: bool = False
    metrics_interval: float = 1.0
    energy: bool = True
    extra_body: Dict[str, Any] = field(default_factory=dict)

    def requests_for(self, concurrency: int) -> int:
        return self.num_requests if self.num_requests else self.repeats * concurrency

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["api_key"] = "***" if self.api_key else None  # never store secrets in result files
        return d


@dataclass
class ServerInfo:
    """What the endpoint told us about itself."""

    endpoint: str
    is_llamacpp: bool
    build_info: Optional[str] = None
    model_path: Optional[str] = None
    model_id: Optional[str] = None
    n_ctx: Optional[int] = None
    total_slots: Optional[int] = None
    metrics: bool = False
    props: Optional[Dict[str, Any]] = None

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        props = d.pop("props") or {}
        d["props"] = {k: v for k, v in props.items() if k not in ("chat_template", "default_generation_settings")}
        return d


def _get(client: HttpClient, path: str) -> Any:
    try:
        return client.get_json(path)
    except HttpError:
        return None


def probe_server(client: HttpClient, endpoint: str) -> ServerInfo:
    """Reachability (one clear error within the timeout), llama.cpp detection, n_ctx, slots."""
    try:
        resp = client.get("/v1/models")
    except HttpError as exc:
        raise UserError(f"cannot reach {endpoint}: {str(exc).split(': ', 1)[-1]}") from exc
    if resp.status == 401:
        raise UserError(f"{endpoint} requires an API key: pass --api-key (or set OPENAI_API_KEY/LLAMA_API_KEY)")
    if resp.status == 503:
        raise UserError(f"{endpoint} is still loading the model (HTTP 503); try again when it is ready")
    model_id = None
    if resp.status == 200:
        try:
            data = resp.json().get("data") or []
            model_id = data[0].get("id") if data else None
        except (ValueError, AttributeError, IndexError):
            pass
    props = _get(client, "/props")
    is_llamacpp = isinstance(props, dict) and ("default_generation_settings" in props or "build_info" in props)
    if resp.status != 200 and not is_llamacpp:
        raise UserError(f"{endpoint} does not look like an OpenAI-compatible server (/v1/models: HTTP {resp.status})")
    info = ServerInfo(endpoint=endpoint, is_llamacpp=is_llamacpp, model_id=model_id)
    if is_llamacpp:
        assert isinstance(props, dict)
        info.props = props
        info.build_info = props.get("build_info")
        info.model_path = props.get("model_path")
        info.total_slots = props.get("total_slots")
        info.n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
        if not info.n_ctx:
            slots = _get(client, "/slots")
            if isinstance(slots, list) and slots and isinstance(slots[0], dict):
                info.n_ctx = slots[0].get("n_ctx")
    try:
        info.metrics = client.get("/metrics").status == 200
    except HttpError:
        info.metrics = False
    return info


def choose_api(requested: Optional[str], info: ServerInfo) -> str:
    if requested in (None, "auto"):
        return API_COMPLETION if info.is_llamacpp else API_OPENAI_CHAT
    if requested == "completion-auto":  # --mode completion: the server's own completion endpoint
        return API_COMPLETION if info.is_llamacpp else API_OPENAI_COMPLETIONS
    if requested == API_COMPLETION and not info.is_llamacpp:
        raise UserError("--api completion needs llama.cpp's /completion; this server is not llama.cpp")
    return str(requested)


@dataclass
class Cell:
    index: int
    prompt_tokens: int
    concurrency: int
    num_requests: int
    status: str = "pending"  # pending | done | skipped | interrupted | aborted
    reason: Optional[str] = None
    warnings: List[str] = field(default_factory=list)
    records: List[RequestRecord] = field(default_factory=list)
    energy: Optional[Dict[str, Any]] = None
    server_metrics: Optional[Dict[str, Any]] = None
    summary: Optional[Dict[str, Any]] = None

    @property
    def label(self) -> str:
        return f"p{self.prompt_tokens}-c{self.concurrency}"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "label": self.label,
            "prompt_tokens": self.prompt_tokens,
            "concurrency": self.concurrency,
            "num_requests": self.num_requests,
            "status": self.status,
            "reason": self.reason,
            "warnings": self.warnings,
            "energy": self.energy,
            "server_metrics": self.server_metrics,
            **(self.summary or {}),
        }


def plan_cells(params: BenchParams, info: ServerInfo, factory: PromptFactory, api: str) -> List[Cell]:
    """All cells in run order; those that cannot run are skipped with a reason (or --strict fails)."""
    cells: List[Cell] = []
    overhead = factory.chat_overhead() if api == API_OPENAI_CHAT else None
    for size in params.prompt_sizes:
        reason = None
        need = size + params.max_output_tokens
        if info.n_ctx and need > info.n_ctx:
            reason = (
                f"prompt {size} + output {params.max_output_tokens} = {need} tokens does not fit the "
                f"server's context of {info.n_ctx} tokens per slot"
            )
        elif overhead is not None and size <= overhead:
            reason = f"{size} tokens is not more than the chat template's own {overhead} tokens"
        if reason and params.strict:
            raise UserError(f"prompt size {size}: {reason} (drop --strict to skip it)")
        for conc in params.concurrency:
            cell = Cell(len(cells), size, conc, params.requests_for(conc))
            if reason:
                cell.status, cell.reason = "skipped", reason
            elif info.total_slots and conc > info.total_slots:
                cell.warnings.append(
                    f"concurrency {conc} > {info.total_slots} server slots: requests queue in the server "
                    "(see requests_deferred and TTFT)"
                )
            cells.append(cell)
    return cells


def build_body(api: str, params: BenchParams, info: ServerInfo, prompt: Any, seed: int) -> Dict[str, Any]:
    """The request body; llama.cpp gets cache_prompt=false and ignore_eos so prefill and output are real."""
    body: Dict[str, Any] = {"stream": True, "temperature": params.temperature, "seed": seed}
    if api == API_COMPLETION:
        body.update(prompt=prompt, n_predict=params.max_output_tokens)
    else:
        body.update(max_tokens=params.max_output_tokens, stream_options={"include_usage": True})
        model = params.api_model or info.model_id
        if model:
            body["model"] = model
        if api == API_OPENAI_CHAT:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
    if info.is_llamacpp:
        body.update(cache_prompt=False, ignore_eos=True)
    body.update(params.extra_body)
    return body


def is_local(info: ServerInfo) -> bool:
    from urllib.parse import urlparse

    host = urlparse(info.endpoint).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1", "0.0.0.0") or host.startswith("127.")


def make_factory(params: BenchParams, info: ServerInfo, api: str) -> Tuple[PromptFactory, Optional[str]]:
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
    mode = "chat" if api == API_OPENAI_CHAT else ("tokens" if info.is_llamacpp else "text")
    return PromptFactory(params.task, params.seed, tokenizer, mode), note
