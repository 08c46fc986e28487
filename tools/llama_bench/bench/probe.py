"""What the endpoint tells us about itself before a run: reachability (via the shared readiness
policy), llama.cpp or not, context size, slots, /metrics; and the API chosen for it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

from ..endpoint import Readiness, check_ready, is_loopback
from ..http import HttpClient, HttpError
from ..utils import UserError
from .records import Api


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

    @property
    def is_local(self) -> bool:
        """On this machine, so RAPL/NVML energy measures it."""
        return is_loopback(self.endpoint)

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


def _positive_int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def probe_server(client: HttpClient, endpoint: str) -> ServerInfo:
    """Reachability (one clear error within the timeout), llama.cpp detection, n_ctx, slots."""
    check = check_ready(client, timeout=client.timeout)
    if check.state is Readiness.UNREACHABLE:
        raise UserError(f"cannot reach {endpoint}: {check.detail}")
    if check.state is Readiness.UNAUTHORIZED:
        raise UserError(f"{endpoint} requires an API key: pass --api-key (or set LLAMA_API_KEY/OPENAI_API_KEY)")
    if check.state is Readiness.LOADING:
        raise UserError(f"{endpoint} is still loading the model (HTTP 503); try again when it is ready")
    props = _get(client, "/props")
    is_llamacpp = isinstance(props, dict) and ("default_generation_settings" in props or "build_info" in props)
    if check.state is Readiness.NOT_A_SERVER and not is_llamacpp:
        raise UserError(f"{endpoint} does not look like an OpenAI-compatible server ({check.detail})")
    models = _get(client, "/v1/models")
    model_id = None
    data = models.get("data") if isinstance(models, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict) and isinstance(data[0].get("id"), str):
        model_id = data[0]["id"]
    info = ServerInfo(endpoint=endpoint, is_llamacpp=is_llamacpp, model_id=model_id)
    if is_llamacpp:
        assert isinstance(props, dict)
        info.props = props
        info.build_info = props.get("build_info") if isinstance(props.get("build_info"), str) else None
        info.model_path = props.get("model_path") if isinstance(props.get("model_path"), str) else None
        info.total_slots = _positive_int(props.get("total_slots"))
        settings = props.get("default_generation_settings")
        info.n_ctx = _positive_int(settings.get("n_ctx")) if isinstance(settings, dict) else None
        if not info.n_ctx:
            slots = _get(client, "/slots")
            if isinstance(slots, list) and slots and isinstance(slots[0], dict):
                info.n_ctx = _positive_int(slots[0].get("n_ctx"))
    try:
        info.metrics = client.get("/metrics").status == 200
    except HttpError:
        info.metrics = False
    return info


def choose_api(requested: Api, info: ServerInfo) -> Api:
    """The concrete API for this server (AUTO and NATIVE are resolved here)."""
    if requested is Api.AUTO:
        return Api.COMPLETION if info.is_llamacpp else Api.OPENAI_CHAT
    if requested is Api.NATIVE:  # --mode completion: the server's own completion endpoint
        return Api.COMPLETION if info.is_llamacpp else Api.OPENAI_COMPLETIONS
    if requested is Api.COMPLETION and not info.is_llamacpp:
        raise UserError("--api completion needs llama.cpp's /completion; this server is not llama.cpp")
    return requested
