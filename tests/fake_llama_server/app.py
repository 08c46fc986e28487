"""The server: connections, routing (CORS, loading, API keys), the model's life cycle, and main()."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import List, Optional

from .common import ClientGone, HttpError, error_body
from .engine import Engine
from .handlers import Handlers
from .httpio import KEEP_ALIVE_MAX, KEEP_ALIVE_S, EventStream, Request, Response, connection_header, json_response
from .httpio import read_request, response_head
from .log import Log
from .metrics import Metrics
from .options import Options, UsageError, parse_args, usage
from .router import Router, exit_with_router
from .slots import SlotPool
from .vocab import Vocab

PUBLIC_PATHS = ("/health", "/v1/health")  # the only endpoints that need no API key

# The real server orders these three error bodies differently from the rest.
LOADING_ERROR = {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}
AUTH_ERROR = {"error": {"message": "Invalid API Key", "type": "authentication_error", "code": 401}}
NOT_FOUND_ERROR = {"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}}


class FakeServer:
    def __init__(self, opts: Options, log: Log) -> None:
        self.opts = opts
        self.log = log
        self.vocab = Vocab()
        self.pool = SlotPool(opts.n_slots, opts.n_ctx)
        self.metrics = Metrics()
        self.loaded = False
        model_name = opts.alias or opts.model or "fake-model"
        self.engine = Engine(opts, log, self.vocab, self.pool, self.metrics, model_name)
        self.routes = Handlers(opts, log, self.vocab, self.pool, self.metrics, self.engine).routes()
        self.router = Router(opts, log) if opts.models_dir else None

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
        if self.router is not None:
            return await self.router.route(req, stream)
        handler = self.routes.get((req.method, req.path))
        if handler is None:
            return json_response(404, NOT_FOUND_ERROR)
        return await handler(req, stream)

    def authorized(self, req: Request) -> bool:
        auth = req.headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else req.headers.get("x-api-key", "")
        return key in self.opts.api_keys

    # -- life cycle -----------------------------------------------------------------------------

    async def run(self) -> int:
        opts, log = self.opts, self.log
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        if opts.ignore_sigterm:  # a server stuck in shutdown: only SIGKILL ends it
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for sig in (signal.SIGINT,) if opts.ignore_sigterm else (signal.SIGTERM, signal.SIGINT):
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
        if self.router is not None:
            return await self.run_router(server, stop)
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

    async def run_router(self, server: asyncio.AbstractServer, stop: asyncio.Event) -> int:
        assert self.router is not None
        log = self.log
        log.srv("I", "llama_server", "starting server in router mode. models will be automatically loaded on-demand")
        log.srv("I", "llama_server", f"available models: {len(self.router.models)}")
        self.loaded = True
        log.srv("I", "llama_server", f"listening on http://{self.opts.host}:{self.opts.port}")
        await stop.wait()
        server.close()
        log.srv("I", "operator()", "operator(): cleaning up before exit...")
        await self.router.stop()
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
    exit_with_router()
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
