"""`llama-bench benchmark`, `bench`, `compare` and `plot`: validation, server reuse/start, the run,
and writing what it measured (also after Ctrl-C or a dead server)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .benchmark import BenchParams, JsonlWriter, Runner, choose_api, make_factory, plan_cells, probe_server
from .http import HttpClient, HttpError
from .utils import UserError, parse_token_count


def parse_sizes(text: str) -> List[int]:
    parts = [p.strip() for p in (text or "").split(",")]
    if not any(parts):
        raise UserError("--prompt-sizes is empty: give token counts such as 100,200 or 1k,10k")
    sizes = []
    for part in parts:
        if not part:
            raise UserError(f"--prompt-sizes '{text}' has an empty entry")
        try:
            sizes.append(parse_token_count(part))
        except ValueError as exc:
            raise UserError(f"--prompt-sizes: {exc}") from None
    return sizes


def parse_concurrency(text: str) -> List[int]:
    parts = [p.strip() for p in (text or "").split(",")]
    if not any(parts):
        raise UserError("--concurrency is empty: give numbers such as 1,4,16")
    out = []
    for part in parts:
        try:
            value = int(part)
        except ValueError:
            raise UserError(f"--concurrency: '{part}' is not a whole number (example: 1,4,16)") from None
        if value < 1:
            raise UserError(f"--concurrency: {value} is not allowed, concurrency must be >= 1")
        out.append(value)
    return out


def normalize_endpoint(url: str) -> str:
    url = (url or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UserError(f"--endpoint must be an http(s) URL such as http://127.0.0.1:11433, got '{url}'")
    for suffix in ("/v1/chat/completions", "/v1/completions", "/completion", "/v1"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def params_from_args(args: argparse.Namespace, endpoint: str, api_key: Optional[str]) -> BenchParams:
    api = args.api
    if args.mode and not api:  # paq_llamacpp_studio's --mode chat|completion
        api = "openai-chat" if args.mode == "chat" else "completion-auto"
    extra: Dict[str, Any] = {}
    if args.extra:
        try:
            extra = json.loads(args.extra)
        except ValueError as exc:
            raise UserError(f"--extra is not valid JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise UserError("--extra must be a JSON object, e.g. '{\"top_k\": 1}'")
    return BenchParams(
        endpoint=endpoint,
        api_key=api_key,
        api=api,
        prompt_sizes=parse_sizes(args.prompt_sizes),
        concurrency=parse_concurrency(args.concurrency),
        max_output_tokens=args.max_output_tokens,
        num_requests=args.num_requests,
        repeats=args.repeats,
        temperature=args.temperature,
        request_rate=args.request_rate,
        warmup=args.warmup,
        seed=args.seed,
        task=args.task,
        api_model=args.api_model,
        timeout=args.timeout,
        strict=args.strict,
        metrics_interval=args.metrics_interval,
        energy=not args.no_energy,
        extra_body=extra,
    )


def _check_writable(*paths: Optional[str]) -> None:
    for path in paths:
        if path:
            parent = Path(path).expanduser().resolve().parent
            if not parent.is_dir():
                raise UserError(f"cannot write {path}: directory {parent} does not exist")


def _default_jsonl() -> str:
    from .settings import state_dir

    folder = state_dir() / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl")


# -- commands ------------------------------------------------------------------------------------
def cmd_benchmark(args: argparse.Namespace) -> int:
    endpoint = normalize_endpoint(args.endpoint)
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("LLAMA_API_KEY")
    params = params_from_args(args, endpoint, api_key)
    return execute(params, args)


def cmd_bench(args: argparse.Namespace) -> int:
    from .server import ManagedServer, port_in_use
    from .server_args import config_from_args

    host = "127.0.0.1" if args.host in ("0.0.0.0", "", "localhost") else args.host
    endpoint = f"http://{host}:{args.port}"
    api_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    params = params_from_args(args, endpoint, api_key)  # validate everything before starting anything
    _check_writable(args.json_out, args.csv, args.jsonl)
    if port_in_use(args.host, args.port):
        _wait_existing(endpoint, api_key, args.startup_timeout)
        print(f"Reusing existing llama-server at {host}:{args.port}", flush=True)
        return execute(params, args)

    cfg = config_from_args(args, getattr(args, "extra_server_args", []) or [])
    if not args.skip_vram_check:
        _fit_check(cfg)
    server = ManagedServer(cfg, allow_multi_server=args.allow_multi_server)
    print(f"Starting llama-server ... ({' '.join(server.command)})", flush=True)
    try:
        server.start()
        waited = server.wait_ready(args.startup_timeout)
        print(f"llama-server ready after {waited:.1f} s (pid {server.pid}, log {server.log_path})", flush=True)
        started = {"command": server.command, "pid": server.pid, "log_path": str(server.log_path)}
        from .sysinfo import server_version

        started.update({"binary_" + k: v for k, v in server_version(cfg.binary).items()})
        return execute(params, args, started=started, alive=lambda: server.poll() is None)
    finally:
        code = server.stop()
        if code is not None:
            print(f"Stopped llama-server (exit code {code})", flush=True)


def _wait_existing(endpoint: str, api_key: Optional[str], timeout: float) -> None:
    """Something listens on the port: wait while it loads its model, fail if it is no server."""
    client = HttpClient(endpoint, api_key=api_key, timeout=3.0)
    port = endpoint.rsplit(":", 1)[-1]
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                health = client.get("/health").status
                models = client.get("/v1/models").status if health == 200 else None
            except HttpError as exc:
                raise UserError(
                    f"port {port} is in use but nothing there answers HTTP ({exc}); choose another --port"
                ) from None
            if health == 404:
                raise UserError(f"port {port} is in use by something that is not a llama-server; choose another --port")
            if health == 200 and models != 503:  # 503 = still loading the model
                return
            if time.monotonic() > deadline:
                raise UserError(f"the server at {endpoint} did not become ready within {timeout:g} s")
            time.sleep(0.5)
    finally:
        client.close()


def _fit_check(cfg: Any) -> None:
    """A model larger than free RAM (+ free VRAM when offloading) will not load: say so up front."""
    if not cfg.model or not os.path.isfile(cfg.model):
        return
    import psutil

    size = os.path.getsize(cfg.model)
    budget = psutil.virtual_memory().available
    if not cfg.no_gpu:
        from .power import NvmlReader

        reader = NvmlReader()
        try:
            for gpu in reader.gpus():
                if gpu.mem_total_bytes is not None and gpu.mem_used_bytes is not None:
                    budget += gpu.mem_total_bytes - gpu.mem_used_bytes
        finally:
            reader.close()
    if size > budget:
        gib = 1024**3
        raise UserError(
            f"the model ({size / gib:.1f} GiB) does not fit in free RAM/VRAM ({budget / gib:.1f} GiB); "
            "pass --skip-vram-check to try anyway"
        )


def execute(
    params: BenchParams,
    args: argparse.Namespace,
    started: Optional[Dict[str, Any]] = None,
    alive: Optional[Callable[[], bool]] = None,
) -> int:
    from .report import LiveReporter, make_console, summary_notes, summary_table
    from .results import build_result, environment_manifest, write_csv, write_json

    _check_writable(args.json_out, args.csv, args.jsonl)
    probe = HttpClient(params.endpoint, api_key=params.api_key, timeout=params.probe_timeout)
    try:
        info = probe_server(probe, params.endpoint)
    finally:
        probe.close()
    api = choose_api(params.api, info)
    factory, note = make_factory(params, info, api)
    notes = [note] if note else []
    if not info.metrics:
        notes.append("no /metrics (start llama-server with --metrics): no server-side series")
    cells = plan_cells(params, info, factory, api)
    runnable = [c for c in cells if c.status == "pending"]
    if runnable:
        try:
            factory.prepare(max(c.prompt_tokens for c in runnable))
        except (HttpError, RuntimeError) as exc:
            raise UserError(f"cannot build prompts with the server's tokenizer: {exc}") from None

    console = make_console()
    kind = f"llama.cpp {info.build_info or ''}".strip() if info.is_llamacpp else "OpenAI-compatible server"
    console.print(
        f"Benchmarking {params.endpoint} ({kind}; model {info.model_path or info.model_id or '?'}; "
        f"n_ctx {info.n_ctx or '?'}; slots {info.total_slots or '?'}) api={api} task={params.task}"
    )
    for n in notes:
        console.print(f"[yellow]note:[/] {n}")

    jsonl_path = args.jsonl or _default_jsonl()
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    jsonl = JsonlWriter(jsonl_path, run_id)
    reporter = LiveReporter(quiet=args.quiet)
    runner = Runner(params, info, api, factory, cells, jsonl, reporter, alive=alive)
    try:
        asyncio.run(runner.run())
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, still keep what finished
        runner.state.status = "interrupted"
        runner.state.stop_reason = "interrupted by the user"
        runner.finish_partial()
    finally:
        reporter.close()
        jsonl.close()

    state = runner.state
    for cell in cells:
        if cell.status == "pending":
            cell.status, cell.reason = "not run", state.stop_reason
    example = None
    if runnable:
        from .benchmark import build_body

        example = build_body(api, params, info, "<prompt>", params.seed)
    result = build_result(
        params,
        info,
        api,
        cells,
        state,
        runner.sampler.series,
        environment_manifest(info, started),
        example,
        notes,
        jsonl_path,
    )
    console.print(summary_table(result["cells"]))
    for line in summary_notes(result["cells"]):
        console.print(f"  {line}")
    if args.json_out:
        write_json(args.json_out, result)
        console.print(f"results: {args.json_out}")
    if args.csv:
        write_csv(args.csv, result)
        console.print(f"csv: {args.csv}")
    console.print(f"per-request records: {jsonl_path}")
    return _exit_code(result, state.status, runnable)


def _exit_code(result: Dict[str, Any], status: str, runnable: List[Any]) -> int:
    from .report import make_console

    err = make_console(stderr=True)
    failed = sum((c.get("requests") or {}).get("failed", 0) for c in result["cells"])
    if status == "interrupted":
        err.print("llama-bench: interrupted; finished cells are summarised above")
        return 130
    if status == "server-died":
        err.print(f"llama-bench: error: {result.get('stop_reason')}; finished cells are summarised above")
        return 1
    if not runnable:
        raise UserError("no prompt size fits the server's context; nothing was measured (see the table above)")
    if failed:
        err.print(f"llama-bench: error: {failed} request(s) failed (see the warnings above and the JSONL records)")
        return 1
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .report import compare_table, make_console
    from .results import load_result

    a, b = load_result(args.a), load_result(args.b)
    console = make_console()
    for label, data in (("A", a), ("B", b)):
        server = (data.get("environment") or {}).get("server") or {}
        console.print(
            f"{label}: {data.get('started_at')}  {server.get('build_info') or '-'}  "
            f"{server.get('model_path') or server.get('model_id') or '-'}  api={data.get('api')}"
        )
    table = compare_table(a, b, args.a, args.b)
    if not table.row_count:
        raise UserError("the two results have no cell (prompt size x concurrency) in common")
    console.print(table)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_result
    from .results import load_result

    result = load_result(args.result)
    out = args.out or str(Path(args.result).with_suffix(".png"))
    _check_writable(out)
    plot_result(result, out)
    print(f"wrote {out}")
    return 0
