"""`run_benchmark`: the whole benchmark as one function call, without argparse or a console.

The `benchmark`/`bench`/`capacity` commands call it with a console Observer and then write the files;
tuners and tests call it in-process. It probes the server, plans the cells, builds the prompts, runs the
engine and returns the result document (also after Ctrl-C or a dead server: the finished cells are in
it). With a `search` (capacity.CapacitySearch) the cells are chosen as the run goes.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ..http import HttpClient, HttpError
from ..outputs import OutputPath
from ..utils import UserError
from .output.jsonl import JsonlWriter
from .output.results import build_result, environment_manifest
from .payload import build_body, make_factory
from .plan import BenchParams, Cell, CellStatus, Observer, RunState, RunStatus, Search, StaticSchedule, plan_cells
from .probe import ServerInfo, choose_api, probe_server
from .records import Api
from .runner import Runner
from .builder import RequestBuilder
from .workloads import WorkloadKind

# Builds the search for a server once it is probed: (server, the planned cells) -> the search.
SearchFactory = Callable[[ServerInfo, List[Cell]], Search]


@dataclass
class BenchResult:
    document: Dict[str, Any]  # the JSON result (schema llama-studio.benchmark/3)
    state: RunState
    cells: List[Cell]
    info: ServerInfo
    api: Api
    measured: bool  # at least one cell could run
    jsonl_failed: Optional[str] = None  # why per-request records stopped being written, if they did
    search: Optional[Search] = None

    @property
    def failed_requests(self) -> int:
        return sum(c.summary.requests.failed for c in self.cells if c.summary)


def run_benchmark(
    params: BenchParams,
    observer: Observer,
    jsonl_path: OutputPath,
    started: Optional[Dict[str, Any]] = None,
    alive: Optional[Callable[[], bool]] = None,
    search: Optional[SearchFactory] = None,
) -> BenchResult:
    """Run the benchmark described by `params` against params.endpoint.

    `started` describes the server when we started it (command, pid, log) for the manifest; `alive`
    tells whether its process still runs. Per-request records are appended to `jsonl_path` as they
    finish. `search` picks the cells as the run goes (the planned cells are its starting point); its
    result is stored under the document's "capacity". Raises UserError for what the user can fix before
    anything is measured.
    """
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
    notes.extend(_workload_notes(params))
    overhead = factory.chat_overhead() if api is Api.OPENAI_CHAT else None
    cells = plan_cells(params, info.n_ctx, info.total_slots, overhead)
    runnable = [c for c in cells if c.status is CellStatus.PENDING]
    if runnable:
        try:
            factory.prepare(_largest_prompt(params, runnable))
        except (HttpError, RuntimeError) as exc:
            raise UserError(f"cannot build prompts with the server's tokenizer: {exc}") from None
    found = search(info, cells) if search is not None and runnable else None
    schedule = found or StaticSchedule(cells)
    observer.server_probed(info, api, notes)

    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    jsonl = JsonlWriter(jsonl_path, run_id)
    builder = RequestBuilder(params, info, api, factory)
    runner = Runner(params, info, api, builder, schedule, jsonl, observer, alive=alive)
    try:
        asyncio.run(runner.run())
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, still keep what finished
        runner.state.status = RunStatus.INTERRUPTED
        runner.state.stop_reason = "interrupted by the user"
        runner.finish_partial()
    finally:
        jsonl.close()

    state = runner.state
    cells = schedule.cells
    if builder.entries_skipped:
        notes.append(f"{builder.entries_skipped} dataset entr(y/ies) skipped: longer than the server's context")
    for cell in cells:
        if cell.status is CellStatus.PENDING:
            cell.status, cell.reason = CellStatus.NOT_RUN, state.stop_reason
    example = build_body(api, params, info, "<prompt>", params.seed) if runnable else None
    document = build_result(
        params,
        info,
        api,
        cells,
        state,
        runner.sampler.series,
        environment_manifest(info, started),
        example,
        notes,
        str(jsonl_path),
        slots_series=runner.sampler.slots_series,
    )
    if found is not None:
        document["capacity"] = found.result(state.stop_reason)
    return BenchResult(
        document, state, cells, info, api, measured=bool(runnable), jsonl_failed=jsonl.failed, search=found
    )


def _largest_prompt(params: BenchParams, runnable: List[Cell]) -> int:
    """The longest prompt the token pools must cover (a dataset's entries given as lengths included)."""
    sizes = [c.prompt_size for c in runnable]
    dataset = params.workload.dataset
    if dataset is not None:
        sizes += [e.prompt_tokens for e in dataset.entries if e.prompt_tokens is not None]
    return max(sizes + [64])


def _workload_notes(params: BenchParams) -> List[str]:
    wl = params.workload
    notes = []
    if wl.kind is not WorkloadKind.UNIQUE:
        notes.append(f"workload: {wl.describe()}")
    if wl.cache_prompt:
        notes.append("cache_prompt is on: this workload measures the prompt cache (hits are reported per cell)")
    if wl.dataset is not None and wl.dataset.skipped:
        notes.append(f"{wl.dataset.skipped} conversation(s) of {wl.dataset.path} have no human turn with an answer")
    return notes
