"""`llama-bench benchmark`, `bench`, `compare` and `plot`: the commands around run_benchmark — server
reuse or start, the console, and writing what was measured (also after Ctrl-C or a dead server).
`capacity` (and `bench --capacity`) is capacity_cmd.capacity, a Command like `benchmark`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .. import stdio, stopping
from ..endpoint import Readiness, check_ready
from ..http import HttpClient
from ..server.config import LaunchOptions, ServerConfig
from ..outputs import PNG_MARKER, OutputFailed, OutputPath, check_distinct, derived_output, output_path, report_failures
from ..settings import state_subdir
from ..utils import ExitStatus, UserError, as_dict
from .entrypoint import BenchResult, run_benchmark
from .plan import BenchParams, RunStatus


@dataclass
class OutputOptions:
    """Where a run's results go; paths are validated (outputs.output_path) before anything runs."""

    json_out: Optional[OutputPath] = None
    csv: Optional[OutputPath] = None
    jsonl: Optional[OutputPath] = None  # default: a new file in the state directory
    quiet: bool = False


# What `bench` runs on the server it reuses or starts: (params, outputs, started, alive) -> exit status.
Command = Callable[..., int]


def default_jsonl() -> OutputPath:
    folder = state_subdir("bench")
    path = output_path(str(folder / f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"), "--jsonl")
    assert path is not None
    return path


def benchmark(
    params: BenchParams,
    out: OutputOptions,
    started: Optional[Dict[str, Any]] = None,
    alive: Optional[Callable[[], bool]] = None,
) -> int:
    """Benchmark the running server at params.endpoint; print the summary and write the files."""
    from .output.console import LiveReporter, make_console, summary_notes, summary_table

    jsonl_path = out.jsonl or default_jsonl()
    reporter = LiveReporter(quiet=out.quiet)
    try:
        result = run_benchmark(params, reporter, jsonl_path, started=started, alive=alive)
    finally:
        reporter.close()
    console = make_console()
    console.print(summary_table(result.document["cells"]))
    for line in summary_notes(result.document["cells"]):
        console.print(f"  {line}")
    failures = write_outputs(result, out, jsonl_path)
    code = exit_status(result)
    return ExitStatus.OUTPUT_ERROR if failures and code == ExitStatus.OK else code


def write_outputs(result: BenchResult, out: OutputOptions, jsonl_path: OutputPath) -> List[str]:
    """Write --json-out and --csv, each on its own: one that cannot be written (a full disk) never
    costs the others; the failures are reported (one line each) and returned."""
    from .output.results import write_csv, write_json

    failures = [result.jsonl_failed] if result.jsonl_failed else []
    for target, writer, label in ((out.json_out, write_json, "results"), (out.csv, write_csv, "csv")):
        if target is None:
            continue
        try:
            writer(target, result.document)
            stdio.final(f"{label}: {target}")
        except OutputFailed as exc:
            failures.append(str(exc))
    stdio.final(f"per-request records: {jsonl_path}")
    report_failures("llama-bench", failures)
    return failures


def exit_status(result: BenchResult, failed_requests_fail: bool = True) -> int:
    from .output.console import make_console

    err = make_console(stderr=True)
    status = result.state.status
    if status is RunStatus.INTERRUPTED:
        err.print("llama-bench: interrupted; finished cells are summarised above")
        return ExitStatus.INTERRUPTED
    if status is RunStatus.SERVER_DIED:
        err.print(f"llama-bench: error: {result.state.stop_reason}; finished cells are summarised above")
        return ExitStatus.FAILED
    if not result.measured:
        raise UserError("no prompt size fits the server's context; nothing was measured (see the table above)")
    if result.failed_requests and failed_requests_fail:
        err.print(
            f"llama-bench: error: {result.failed_requests} request(s) failed (see the warnings above and the JSONL "
            "records)"
        )
        return ExitStatus.FAILED
    return ExitStatus.OK


def bench(
    params: BenchParams,
    out: OutputOptions,
    host: str,
    port: int,
    make_config: Callable[[], ServerConfig],
    launch: LaunchOptions,
    skip_vram_check: bool = False,
    command: Optional[Command] = None,
) -> int:
    """Reuse the server on host:port (params.endpoint), or start one from `make_config()` (called only
    then: reusing needs no model) and stop it afterwards; `command` (default: benchmark) runs on it."""
    run = command or benchmark
    from ..server.managed import ManagedServer
    from ..server.ports import port_in_use

    if port_in_use(host, port):
        _wait_existing(params.endpoint, params.api_key, launch.startup_timeout)
        print(f"Reusing existing llama-server at {params.endpoint.split('://', 1)[-1]}", flush=True)
        return run(params, out)
    from ..server.preflight import preflight

    cfg = make_config()
    checked = preflight(cfg, skip_fit_check=skip_vram_check)  # the model's header, and does it fit
    server = ManagedServer(cfg, allow_multi_server=launch.allow_multi_server)
    print(f"Starting llama-server ... ({' '.join(server.command)})", flush=True)
    for line in checked.lines():
        print(line, flush=True)
    try:
        server.start()
        waited = server.wait_ready(launch.startup_timeout)
        print(f"llama-server ready after {waited:.1f} s (pid {server.pid}, log {server.log_path})", flush=True)
        started: Dict[str, Any] = {"command": server.command, "pid": server.pid, "log_path": str(server.log_path)}
        if checked.estimate is not None:
            started["memory_estimate"] = checked.estimate.describe()
        from ..sysinfo import server_version

        started.update({"binary_" + k: v for k, v in server_version(cfg.binary).items()})
        return run(params, out, started=started, alive=lambda: server.poll() is None)
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
            stopping.check()
            check = check_ready(client, timeout=3.0)
            if check.ready:
                return
            if check.state is Readiness.UNREACHABLE:
                raise UserError(
                    f"port {port} is in use but nothing there answers HTTP ({check.detail}); choose another --port"
                )
            if check.state is Readiness.NOT_A_SERVER:
                raise UserError(f"port {port} is in use by something that is not a llama-server; choose another --port")
            if check.state is Readiness.UNAUTHORIZED:
                raise UserError(f"the server at {endpoint} requires an API key: pass --api-key")
            if time.monotonic() > deadline:
                raise UserError(f"the server at {endpoint} did not become ready within {timeout:g} s")
            stopping.wait(0.5)
    finally:
        client.close()


def compare(path_a: str, path_b: str) -> int:
    from .output.console import compare_table, make_console
    from .output.results import load_result

    a, b = load_result(path_a), load_result(path_b)
    console = make_console()
    for label, data in (("A", a), ("B", b)):
        server = as_dict(as_dict(data.get("environment")).get("server"))
        console.print(
            f"{label}: {data.get('started_at')}  {server.get('build_info') or '-'}  "
            f"{server.get('model_path') or server.get('model_id') or '-'}  api={data.get('api')}"
        )
    table = compare_table(a, b, path_a, path_b)
    if not table.row_count:
        raise UserError("the two results have no cell (prompt size x concurrency) in common")
    console.print(table)
    from .significance import METHOD_NOTE

    console.print(METHOD_NOTE)
    return ExitStatus.OK


def plot(path: str, out: Optional[str]) -> int:
    from .output.plot import plot_result
    from .output.results import load_result

    if out is not None:
        target = output_path(out, "--out")
    else:  # a name made up from the result's: never replaces a user's file
        target = derived_output(str(Path(path).with_suffix(".png")), "--out", PNG_MARKER)
    assert target is not None
    check_distinct(target, inputs=[("result", path)])
    result = load_result(path)
    try:
        plot_result(result, target)
    except OutputFailed as exc:
        raise UserError(str(exc), ExitStatus.OUTPUT_ERROR) from None
    print(f"wrote {target}")
    return ExitStatus.OK
