"""What autotune hands back: the best flags, a copy-paste `llama-server` command and the matching
`./llama-run run ...` line, `--output` (the best configuration, paq_llamacpp_studio's file), `--json-out`
(every trial, the verification and the environment manifest) and `--plot` (objective per trial and per
parameter; matplotlib optional)."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import dataclass, field
from typing import IO, Any, Dict, List, Optional

from ..outputs import PNG_METADATA, OutputPath, write_atomic
from .space import Candidate, describe
from .trial import SECRET_FLAGS, Trial, redact
from .verify import Verification

SCHEMA = "llama-studio.autotune/1"
BEST_SCHEMA = "llama-studio.autotune-best/1"

# llama-server flags (as server/config.build_command writes them) that `llama-run run` has a flag for.
RUN_FLAGS = {
    "-t": "--threads",
    "-tb": "--threads-batch",
    "-np": "--parallel",
    "-b": "--batch-size",
    "-ub": "--ubatch-size",
    "-ngl": "--n-gpu-layers",
    "-fa": "--flash-attn",
    "-ctk": "--cache-type-k",
    "-ctv": "--cache-type-v",
    "--alias": "--model-alias",
    "--chat-template-kwargs": "--chat-template-kwargs",
    "--fit": "--fit",
}
SWITCHES = {"--jinja": "--jinja", "--no-jinja": "--no-jinja"}


def without_secrets(cmd: List[str]) -> List[str]:
    """The command without its API-key flags (the start script: setup.sh never writes keys either)."""
    out: List[str] = []
    skip = False
    for arg in cmd:
        if skip:
            skip = False
        elif arg in SECRET_FLAGS:
            skip = True
        else:
            out.append(arg)
    return out


@dataclass
class Best:
    """The configuration we recommend, and how sure we are."""

    candidate: Candidate
    fixed: Candidate
    value: float
    unit: str
    source: str  # "verified" (re-measured against the defaults) or "search"
    low: Optional[float] = None
    high: Optional[float] = None
    ratio_to_defaults: Optional[float] = None
    significant: Optional[bool] = None
    verdict: Optional[str] = None
    server_command: List[str] = field(default_factory=list)
    run_command: List[str] = field(default_factory=list)
    trial: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "params": self.candidate,
            "fixed": self.fixed,
            "description": describe(self.candidate),
            "value": self.value,
            "unit": self.unit,
            "source": self.source,
            "interval": None if self.low is None else {"low": self.low, "high": self.high},
            "ratio_to_defaults": self.ratio_to_defaults,
            "significant": self.significant,
            "verdict": self.verdict,
            "trial": self.trial,
            "server_command": shlex.join(redact(self.server_command)),
            "server_argv": redact(self.server_command),
            "llama_run_command": shlex.join(redact(self.run_command)),
        }


def _run_options() -> set:
    """The option strings `llama-run run` accepts for the server (server/args.py: one definition)."""
    from ..server.args import add_server_args

    parser = argparse.ArgumentParser(add_help=False)
    add_server_args(parser)
    return {s for action in parser._actions for s in action.option_strings}


def llama_run_command(server_command: List[str], n_user_args: int) -> List[str]:
    """`./llama-run run ...` that starts the same server: llama-run's own flags where it has them, every
    other flag after `--`. `server_command` is build_command()'s list; its last `n_user_args` items are the
    user's raw flags, passed on unchanged."""
    options = _run_options()
    body = server_command[1 : len(server_command) - n_user_args]
    cmd = ["./llama-run", "run", "--llama-server", server_command[0]]
    raw: List[str] = []
    i = 0
    while i < len(body):
        flag = body[i]
        value = body[i + 1] if i + 1 < len(body) else None
        if flag == "--metrics":  # llama-run adds it itself
            i += 1
        elif flag in ("--host", "--port", "-m", "-c", "--api-key") and value is not None:
            name = {"-m": "--model", "-c": "--ctx-size"}.get(flag, flag)
            cmd += [name, value]
            i += 2
        elif flag in SWITCHES and SWITCHES[flag] in options:
            cmd.append(SWITCHES[flag])
            i += 1
        elif flag in RUN_FLAGS and RUN_FLAGS[flag] in options and value is not None:
            cmd += [RUN_FLAGS[flag], value]
            i += 2
        else:
            raw.append(flag)
            i += 1
    raw += server_command[len(server_command) - n_user_args :]
    return cmd + (["--", *raw] if raw else [])


def best_lines(best: Best) -> List[str]:
    lines = [f"best: {describe(best.candidate)} -> {best.value:.4g} {best.unit} ({best.source})"]
    if best.low is not None and best.high is not None:
        lines[0] += f", 95 % interval {best.low:.4g}..{best.high:.4g}"
    if best.verdict:
        lines.append(f"verdict: {best.verdict}")
    lines.append(f"llama-server: {shlex.join(redact(best.server_command))}")
    lines.append(f"llama-run:    {shlex.join(redact(best.run_command))}")
    return lines


def best_document(best: Best, workload: Dict[str, Any]) -> Dict[str, Any]:
    """--output: the best configuration (what paq_llamacpp_studio's --output held, and more)."""
    return {"schema": BEST_SCHEMA, "objective": workload.get("objective"), "workload": workload, **best.to_dict()}


def result_document(
    status: str,
    stop_reason: str,
    started_wall: float,
    header: Dict[str, Any],
    trials: List[Trial],
    verification: Optional[Verification],
    best: Optional[Best],
    environment: Dict[str, Any],
) -> Dict[str, Any]:
    """--json-out: everything the run knows."""
    return {
        "schema": SCHEMA,
        "status": status,
        "stop_reason": stop_reason,
        "started_at": _iso(started_wall),
        "finished_at": _iso(time.time()),
        **header,
        "trials": [t.to_dict() for t in trials],
        "verification": verification.to_dict() if verification else None,
        "best": best.to_dict() if best else None,
        "environment": environment,
    }


def _iso(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(wall))


def write_json(out: OutputPath, document: Dict[str, Any]) -> None:
    def write(fh: IO) -> None:
        json.dump(document, fh, indent=2, default=str)
        fh.write("\n")

    write_atomic(out, write)


def write_plot(out: OutputPath, trials: List[Trial], names: List[str], unit: str, title: str) -> None:
    """Objective per trial (failed and pruned ones marked along the bottom, never as a score), and the
    objective against each parameter's values."""
    plt = _pyplot()
    search = [t for t in trials if t.phase == "search"]
    panels = 1 + len(names)
    cols = min(3, panels)
    rows = -(-panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    ax = flat[0]
    ok = [t for t in search if t.ok]
    ax.errorbar([t.number for t in ok], [t.mean for t in ok], yerr=[t.spread or 0 for t in ok], fmt="o", ms=4)
    bad = [t for t in search if not t.ok]
    if bad:
        ax.plot([t.number for t in bad], [0.0] * len(bad), "x", color="red", transform=ax.get_xaxis_transform())
    ax.set_title("objective per trial (x: failed or pruned)")
    ax.set_xlabel("trial")
    ax.set_ylabel(unit)
    for ax, name in zip(flat[1:], names):
        labels = sorted({str(t.candidate.get(name)) for t in ok}, key=lambda s: (len(s), s))
        pos = {v: i for i, v in enumerate(labels)}
        ax.plot([pos[str(t.candidate.get(name))] for t in ok], [t.mean for t in ok], "o", alpha=0.6)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels)
        ax.set_title(name)
        ax.set_ylabel(unit)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()

    def write(fh: IO) -> None:
        fig.savefig(fh, format="png", dpi=100, metadata=PNG_METADATA)

    try:
        write_atomic(out, write, binary=True)
    finally:
        plt.close(fig)


def _pyplot() -> Any:
    from ..utils import require

    matplotlib = require("matplotlib", "matplotlib", "--plot")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "matplotlib", "--plot")
