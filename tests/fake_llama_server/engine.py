"""Running a completion in a slot: the wait for a slot, prefill, the token schedule, faults, timings and metrics.

A client that hangs up (seen between prompt batches, at every token, or when a write fails) cancels the task
with the lines llama-server logs: `srv          stop: cancel task, id_task = N`, then the slot's release.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .common import ClientGone
from .formats import ApiFormat
from .generation import GenRequest, Outcome
from .httpio import EventStream, Request, Response, json_response
from .log import Log
from .metrics import Metrics
from .options import Options
from .slots import Slot, SlotPool, Task, common_prefix
from .vocab import GEN_PIECES, Vocab

DEFAULT_N_GEN = 16  # tokens generated before "EOS" when a request sets no limit
# A token that comes out at most this late is booked at its scheduled time: the event loop's
# wake-up delay is delivery overhead, not "model" time. Later than that, the fake is overloaded
# and reports what really happened.
LATE_S = 0.002
PREFILL_CHECK_S = 0.05  # how often a long prefill looks for a client that hung up


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
    cancelled: bool = False  # the client hung up mid-generation
    t_first: float = 0.0  # when prefill ended and the first token was ready
    t_last: float = 0.0  # when the last token came out
    generated: List[int] = field(default_factory=list)
    text: List[str] = field(default_factory=list)


class Engine:
    """Completions and their side effects on the slots, the metrics and the log."""

    def __init__(
        self, opts: Options, log: Log, vocab: Vocab, pool: SlotPool, metrics: Metrics, model_name: str
    ) -> None:
        self.opts = opts
        self.log = log
        self.vocab = vocab
        # Before any request is tokenized: the generated words claim their hashed ids first, as they always have.
        self.gen_ids = [vocab.token_id(p) for p in GEN_PIECES]
        self.pool = pool
        self.metrics = metrics
        self.model_name = model_name
        self.next_task = 0
        self.completions_seen = 0
        self.interval = max(0.0, opts.token_interval_ms) / 1000.0
        self.per_token_metrics = opts.metrics_update == "token"

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
        try:
            slot, why, waited = await self.pool.acquire(gen.prompt, gen.cache_prompt, stream.gone)
        except ClientGone:
            self.log_cancel(task_id)
            raise
        try:
            self.log.slot("I", "get_available_slot", slot.id, -1, why)
            self.log.slot("I", "launch_slot_with_task", slot.id, task_id, "processing task, is_child = 0")
            # Prefill runs from arrival (or from when a slot freed up): an absolute schedule.
            job = self.start_job(
                gen, slot, task_id, stream, asyncio.get_running_loop().time() if waited else req.arrival
            )
            job.fault = fault
            try:
                await self.prefill(job)
            except ClientGone:
                self.log_cancel(task_id)
                raise
            try:
                await self.generate(job)
            except (ClientGone, ConnectionError):  # gone, or found gone when a write failed
                job.cancelled = True
                self.log_cancel(task_id)
                raise
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
        while True:  # like llama.cpp between prompt batches: a client that hangs up stops the prefill
            if job.stream.gone():
                raise ClientGone()
            delay = task.prefill_end - loop.time()
            if delay <= 0:
                break
            await asyncio.sleep(min(delay, PREFILL_CHECK_S))
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
        self.log_timings(job.slot.id, job.task.id, out, job.cancelled)

    def log_cancel(self, task_id: int) -> None:
        """What llama-server logs when a client hangs up on a request that has not finished."""
        self.log.srv("W", "stop", f"cancel task, id_task = {task_id}")

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

    def log_timings(self, slot_id: int, task_id: int, out: Outcome, cancelled: bool = False) -> None:
        """The end-of-request lines; a cancelled request only releases its slot (no timings), as in llama.cpp."""
        log = self.log.slot
        if cancelled:
            log(
                "I",
                "release",
                slot_id,
                task_id,
                f"stop processing: n_tokens = {out.tokens_cached}, truncated = {int(out.truncated)}",
            )
            return
        t = out.timings()
        total_ms = out.prompt_ms + out.predicted_ms
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
