"""Router mode (`--models-dir DIR`) as llama-server b11434 runs it: the router loads no model itself; every
`*.gguf` in DIR is a model named by its file stem, started on demand as a child server on a free local port
(in the router's process group, watching its stdin like the real children do), and each request is proxied
to the child its model names: POST bodies carry `"model"`, GET requests `?model=NAME`. /health, /models and
/props without a model are the router's own; a request without a model, or for an unknown one, is a 400."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional
from urllib.parse import unquote

from .common import BUILD_INFO, error_body
from .httpio import EventStream, Request, Response, json_response
from .log import Log
from .options import Options

CHILD_HOST = "127.0.0.1"
CHILD_ENV = "LLAMA_FAKE_ROUTER_CHILD"  # a child exits when the router's end of its stdin closes
READY_TIMEOUT_S = 30.0
MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__main__.py")
ROUTER_PATHS = {("GET", "/health"), ("GET", "/v1/health"), ("GET", "/models"), ("GET", "/v1/models")}


@dataclass
class Instance:
    name: str
    path: str
    status: str = "unloaded"  # unloaded | loading | loaded | failed
    port: int = 0
    proc: Optional[asyncio.subprocess.Process] = None
    exit_code: Optional[int] = None
    ready: Optional["asyncio.Future[bool]"] = None


def model_name(filename: str) -> Optional[str]:
    """The name a file is served under: its stem; a split model is named once, by its first part."""
    if not filename.endswith(".gguf"):
        return None
    stem = filename[: -len(".gguf")]
    head, sep, tail = stem.rpartition("-of-")
    if sep and tail.isdigit() and head[-5:].isdigit() and head[-6:-5] == "-":
        return head[:-6] if int(head[-5:]) == 1 else None
    return stem


def python() -> str:
    """This interpreter: sys.executable is empty when started as `exec -a llama-server python` (tests/bin)."""
    try:
        return os.readlink("/proc/self/exe")
    except OSError:
        return sys.executable or "python3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((CHILD_HOST, 0))
        return int(sock.getsockname()[1])


def invalid(message: str) -> Response:
    return json_response(400, error_body(400, message, "invalid_request_error"))


class Router:
    def __init__(self, opts: Options, log: Log) -> None:
        self.opts = opts
        self.log = log
        self.models: Dict[str, Instance] = {}
        folder = opts.models_dir
        for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            name = model_name(entry)
            if name is not None:
                self.models[name] = Instance(name, os.path.join(folder, entry))

    # -- the router's own endpoints ---------------------------------------------------------------

    def model_list(self) -> Dict[str, Any]:
        now = int(time.time())
        data = []
        for inst in self.models.values():
            status: Dict[str, Any] = {"value": inst.status, "args": self.child_args(inst) if inst.port else []}
            if inst.status == "failed":
                status.update(exit_code=inst.exit_code, failed=True)
            data.append({"id": inst.name, "aliases": [], "tags": [], "object": "model", "owned_by": "llamacpp",
                         "created": now, "status": status, "architecture": "llama", "source": "models_dir",
                         "can_remove": False})  # fmt: skip
        return {"data": data, "object": "list"}

    def props(self) -> Dict[str, Any]:
        return {"role": "router", "max_instances": 4, "models_autoload": True, "model_alias": "llama-server",
                "model_path": "none", "default_generation_settings": {"params": {}, "n_ctx": 0},
                "build_info": BUILD_INFO}  # fmt: skip

    async def route(self, req: Request, stream: EventStream) -> Optional[Response]:
        if (req.method, req.path) in ROUTER_PATHS:
            return json_response(200, {"status": "ok"} if req.path.endswith("health") else self.model_list())
        if req.method == "GET":
            name = unquote(req.query.get("model", ""))
            if req.path == "/props" and not name:
                return json_response(200, self.props())
        else:
            try:
                body = json.loads(req.body or b"{}")
            except ValueError as exc:
                return invalid(f"invalid JSON: {exc}")
            name = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else ""
        if not name:
            return invalid("model name is missing from the request")
        inst = self.models.get(name)
        if inst is None:
            return invalid(f"model '{name}' not found")
        if not await self.ensure_loaded(inst):
            return json_response(500, error_body(500, f"model '{name}' failed to load", "server_error"))
        await self.proxy(inst, req, stream)
        return None

    # -- children -----------------------------------------------------------------------------------

    def child_args(self, inst: Instance) -> List[str]:
        o = self.opts
        args = ["--host", CHILD_HOST, "--port", str(inst.port), "-m", inst.path, "--alias", inst.name,
                "-c", str(o.ctx_size), "-np", str(o.parallel), "--prompt-tps", str(o.prompt_tps),
                "--token-interval-ms", str(o.token_interval_ms), "--metrics-update", o.metrics_update]  # fmt: skip
        return args + (["--metrics"] if o.metrics else []) + ([] if o.slots else ["--no-slots"])

    async def ensure_loaded(self, inst: Instance) -> bool:
        if inst.ready is None or inst.status == "failed":
            inst.ready = asyncio.get_running_loop().create_future()
            asyncio.ensure_future(self.spawn(inst))
        return await asyncio.shield(inst.ready)

    async def spawn(self, inst: Instance) -> None:
        assert inst.ready is not None
        inst.status, inst.port = "loading", free_port()
        self.log.srv("I", "load", f"spawning server instance with name={inst.name} on port {inst.port}")
        env = dict(os.environ, **{CHILD_ENV: "1"})
        env.pop("LLAMA_ARG_API_KEY", None)  # the router checks keys; its children listen on loopback only
        try:
            inst.proc = await asyncio.create_subprocess_exec(
                python(), "-S", MAIN, *self.child_args(inst), stdin=asyncio.subprocess.PIPE, env=env
            )
        except OSError as exc:
            self.log.srv("E", "load", f"failed to spawn server instance: {exc}")
            inst.status, inst.exit_code = "failed", -1
            inst.ready.set_result(False)
            return
        deadline = time.monotonic() + READY_TIMEOUT_S
        while inst.proc.returncode is None and time.monotonic() < deadline:
            if await self.child_healthy(inst.port):
                inst.status = "loaded"
                self.log.srv("I", "load", f"instance name={inst.name} is ready")
                inst.ready.set_result(True)
                asyncio.ensure_future(self.watch(inst, inst.proc))
                return
            await asyncio.sleep(0.02)
        if inst.proc.returncode is None:
            inst.proc.kill()
        inst.exit_code = await inst.proc.wait()
        inst.status = "failed"
        inst.ready.set_result(False)

    async def watch(self, inst: Instance, proc: asyncio.subprocess.Process) -> None:
        """A child that exits on its own leaves its model unloaded (failed with its exit code when non-zero)."""
        code = await proc.wait()
        if inst.proc is proc:
            inst.exit_code, inst.status, inst.ready = code, ("unloaded" if code == 0 else "failed"), None

    @staticmethod
    async def child_healthy(port: int) -> bool:
        try:
            reader, writer = await asyncio.open_connection(CHILD_HOST, port)
        except OSError:
            return False
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return (await reader.readline()).startswith(b"HTTP/1.1 200")
        except (OSError, asyncio.IncompleteReadError):
            return False
        finally:
            writer.close()

    async def proxy(self, inst: Instance, req: Request, stream: EventStream) -> None:
        """Forward the request as it came and pipe the child's answer back byte for byte, then close."""
        stream.keep_alive = False
        target = req.path + ("?" + "&".join(f"{k}={v}" for k, v in req.query.items()) if req.query else "")
        skip = ("connection", "content-length", "transfer-encoding", "keep-alive", "expect")
        head = [f"{req.method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in req.headers.items() if k not in skip]
        head += [f"Content-Length: {len(req.body)}", "Connection: close"]
        reader, writer = await asyncio.open_connection(CHILD_HOST, inst.port)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + req.body)
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                stream.writer.write(data)
                await stream.writer.drain()
        finally:
            writer.close()

    async def stop(self) -> None:
        """Stop every child and wait for it, as the router does on its way out."""
        procs = [inst.proc for inst in self.models.values() if inst.proc and inst.proc.returncode is None]
        for proc in procs:
            proc.terminate()
        if procs:
            await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs], timeout=5)
        for proc in procs:
            if proc.returncode is None:
                proc.kill()


def exit_with_router() -> None:
    """In a router's child: exit when the router goes (its end of our stdin closes), like llama.cpp's children."""
    if os.environ.get(CHILD_ENV) != "1":
        return
    import threading

    def wait_for_eof() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os._exit(0)

    threading.Thread(target=wait_for_eof, daemon=True).start()
