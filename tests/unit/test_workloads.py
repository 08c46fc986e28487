"""Workloads: shared-prefix and multi-turn prompts (exact lengths, what is shared), dataset files (both
formats, one-line errors naming the file and the entry), the request builder, and what the cache and
batched-event figures count."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import pytest

from tools.llama_bench.bench import args as bench_args
from tools.llama_bench.bench.client import StreamParser
from tools.llama_bench.bench.dataset import load_dataset
from tools.llama_bench.bench.payload import build_body
from tools.llama_bench.bench.plan import BenchParams, Cell, CellStatus, plan_cells
from tools.llama_bench.bench.probe import ServerInfo
from tools.llama_bench.bench.records import Api, Capture, RequestRecord, RequestSpec
from tools.llama_bench.bench.stats import aggregate, warnings_for
from tools.llama_bench.bench.workload import PromptFactory
from tools.llama_bench.bench.builder import RequestBuilder
from tools.llama_bench.bench.workloads import Workload, WorkloadKind
from tools.llama_bench.utils import UserError

DATA = Path(__file__).resolve().parents[1] / "data"


class ChatTokenizer:
    """One token per word or punctuation mark; a ChatML-like template over any number of messages."""

    def __init__(self) -> None:
        self.vocab: Dict[str, int] = {}
        self.words: List[str] = []

    def tokenize(self, text: str, add_special: bool = False) -> List[int]:
        ids = []
        for piece in re.findall(r"\w+|[^\w\s]", text):
            if piece not in self.vocab:
                self.vocab[piece] = len(self.words) + 10
                self.words.append(piece)
            ids.append(self.vocab[piece])
        return ([1] if add_special else []) + ids

    def detokenize(self, tokens: Sequence[int]) -> str:
        return " ".join(self.words[t - 10] for t in tokens if t >= 10)

    def template(self, messages: List[Dict[str, str]]) -> str:
        return "".join(f"<|{m['role']}|> {m['content']} <|end|> " for m in messages) + "<|assistant|>"

    def count_chat(self, messages: List[Dict[str, str]]) -> Optional[int]:
        return len(self.tokenize(self.template(messages), add_special=True))


def factory(mode: str = "tokens") -> PromptFactory:
    f = PromptFactory("coding", seed=1, tokenizer=ChatTokenizer(), mode=mode)
    f.prepare(2000)
    return f


# -- shared prefix ---------------------------------------------------------------------------------------
def test_a_group_shares_its_prefix_and_nothing_more() -> None:
    f = factory()
    a1, a2 = f.make_shared(300, "c:0", group=0, prefix_tokens=200), f.make_shared(
        300, "c:2", group=0, prefix_tokens=200
    )
    b = f.make_shared(300, "c:1", group=1, prefix_tokens=200)
    for p in (a1, a2, b):
        assert p.token_ids is not None and len(p.token_ids) == 300 and p.verified
    assert a1.token_ids is not None and a2.token_ids is not None and b.token_ids is not None
    assert a1.token_ids[:200] == a2.token_ids[:200]
    assert a1.token_ids[200:203] != a2.token_ids[200:203]  # the rest starts with a prefix of its own
    assert a1.token_ids[1:20] != b.token_ids[1:20]
    with pytest.raises(ValueError):
        f.make_shared(100, "c:3", group=0, prefix_tokens=100)


def test_shared_prefix_chat_prompts_are_exact_with_the_prefix_as_system_message() -> None:
    f = factory("chat")
    p = f.make_shared(400, "c:0", group=0, prefix_tokens=200)
    tok = f.tokenizer
    assert p.messages is not None and p.messages[0]["role"] == "system" and p.messages[-1]["role"] == "user"
    assert tok is not None and tok.count_chat(p.messages) == 400 and p.counted == 400


# -- multi-turn --------------------------------------------------------------------------------------------
def test_a_turn_is_the_previous_prompt_its_answer_and_a_new_message() -> None:
    f = factory()
    first = f.make(100, "c:0")
    answer = [501, 502, 503]
    second = f.make_turn(first, (answer, "ignored when ids are known"), 100, "c:0:t1")
    assert first.token_ids is not None and second.token_ids is not None
    assert second.token_ids[:103] == first.token_ids + answer
    assert len(second.token_ids) == second.requested == 203 and second.verified


def test_chat_turns_carry_the_conversation_and_fit_exactly() -> None:
    f = factory("chat")
    tok = f.tokenizer
    assert tok is not None
    first = f.make(60, "c:0")
    second = f.make_turn(first, ([], "Sure, here it is."), 60, "c:0:t1")
    third = f.make_turn(second, ([], "Done."), 60, "c:0:t2")
    assert second.messages is not None and [m["role"] for m in second.messages] == ["user", "assistant", "user"]
    assert third.messages is not None and len(third.messages) == 5
    for p in (second, third):
        assert p.messages is not None and tok.count_chat(p.messages) == p.requested == p.counted
    assert second.requested > 60 and third.requested > second.requested


def test_the_builder_sends_the_next_turn_after_an_answer_and_stops_after_the_last() -> None:
    params = BenchParams(endpoint="http://x", prompt_sizes=[100], concurrency=[1], max_output_tokens=4,
                         workload=Workload(WorkloadKind.MULTI_TURN, turns=2))  # fmt: skip
    info = ServerInfo("http://x", True, n_ctx=4096)
    builder = RequestBuilder(params, info, Api.COMPLETION, factory())
    cell = Cell(0, 100, 1, 4, workload=WorkloadKind.MULTI_TURN, turns=2)
    assert cell.units == 2
    first = builder.first(cell, 1, 0)
    assert (first.session, first.turn, first.index) == (1, 0, 2) and first.capture is not None
    assert first.body["cache_prompt"] is True  # the cache is the point here
    first.capture.token_ids.extend([7, 8, 9, 10])
    ok = record(first)
    second = builder.follow_up(first, ok)
    assert second is not None and (second.session, second.turn, second.index) == (1, 1, 3)
    assert second.prompt_tokens == 204 and second.body["prompt"][100:104] == [7, 8, 9, 10]
    assert second.capture is None  # the last answer is not needed
    assert builder.follow_up(second, record(second)) is None
    failed = builder.first(cell, 0, 0)
    assert builder.follow_up(failed, record(failed, ok=False)) is None
    assert builder.remaining_turns(failed) == 1


def record(spec: RequestSpec, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        cell=spec.cell, index=spec.index, api=spec.api, warmup=False, ok=ok, error=None if ok else "boom",
        http_status=200, prompt_tokens_requested=spec.prompt_tokens, max_tokens=spec.max_tokens, start_s=0.0,
    )  # fmt: skip


def test_multi_turn_cells_plan_whole_conversations_that_fit_the_context() -> None:
    wl = Workload(WorkloadKind.MULTI_TURN, turns=3)
    params = BenchParams(endpoint="http://x", prompt_sizes=[100, 1000], concurrency=[2], max_output_tokens=50,
                         num_requests=7, workload=wl)  # fmt: skip
    cells = plan_cells(params, n_ctx=2048, total_slots=4, chat_overhead=None)
    assert cells[0].num_requests == 9 and cells[0].units == 3  # 7 requests -> 3 whole conversations of 3
    assert cells[1].status is CellStatus.SKIPPED and "3 turns" in (cells[1].reason or "")
    default = BenchParams(endpoint="http://x", prompt_sizes=[100], concurrency=[2], max_output_tokens=8, workload=wl)
    assert default.requests_for(2) == 3 * 2 * 3  # rounds x concurrency conversations of 3 turns


def test_request_bodies_turn_the_cache_on_only_for_the_cache_workloads() -> None:
    info = ServerInfo("http://x", True)
    for kind, cache in (
        (WorkloadKind.UNIQUE, False),
        (WorkloadKind.SHARED_PREFIX, True),
        (WorkloadKind.DATASET, False),
    ):
        params = BenchParams(endpoint="http://x", prompt_sizes=[10], concurrency=[1], max_output_tokens=8,
                             workload=Workload(kind, prefix_tokens=5))  # fmt: skip
        assert build_body(Api.COMPLETION, params, info, [1, 2], seed=1)["cache_prompt"] is cache
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    body = build_body(Api.OPENAI_CHAT, params, info, messages, seed=1)
    assert body["messages"] == messages


# -- datasets ------------------------------------------------------------------------------------------------
def test_the_sample_sharegpt_file_replays_first_turns_and_skips_conversations_without_an_answer() -> None:
    data = load_dataset(str(DATA / "sharegpt_sample.json"))
    assert data.format == "sharegpt" and len(data.entries) == 12 and data.skipped == 2
    assert all(e.prompt and e.output_text for e in data.entries)


def test_the_sample_jsonl_file_gives_texts_or_lengths() -> None:
    data = load_dataset(str(DATA / "lengths_sample.jsonl"))
    assert data.format == "jsonl" and len(data.entries) == 5
    assert (data.entries[0].prompt_tokens, data.entries[0].output_tokens) == (64, 8)
    assert data.entries[2].prompt and data.entries[2].prompt_tokens is None
    assert data.entries[4].output_tokens is None  # --max-output-tokens then


@pytest.mark.parametrize(
    "content,needle",
    [
        ('{"prompt_tokens": 5}\n{"prompt_tokens": "many"}\n', "line 2: 'prompt_tokens' must be a whole number"),
        ('{"prompt_tokens": 5}\nnot json\n', "line 2: not valid JSON"),
        ('{"output_tokens": 5}\n', "line 1: needs 'prompt'"),
        ('{"prompt": ""}\n', "line 1: 'prompt' must be a non-empty string"),
        ('[{"conversations": [{"from": "human", "value": 3}]}]', "entry 0, turn 0"),
        ('[{"conversations": "x"}]', "entry 0: expected an object with a 'conversations' list"),
        ('[{"conversations": [{"from": "gpt", "value": "hi"}]}]', "no usable entry"),
        ("[1, 2]", "entry 0: expected an object"),
        ("[", "not valid JSON"),
        ("", "empty"),
    ],
)
def test_a_bad_dataset_is_one_line_naming_the_file_and_the_entry(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as exc:
        load_dataset(str(path))
    assert str(path) in str(exc.value) and needle in str(exc.value) and "\n" not in str(exc.value)
    assert exc.value.exit_code == 2


def test_a_missing_dataset_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="file not found"):
        load_dataset(str(tmp_path / "nope.json"))


def test_dataset_requests_have_the_entries_lengths_made_exact_and_skip_what_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    lines = [{"prompt_tokens": 50, "output_tokens": 5}, {"prompt_tokens": 5000}, {"prompt": "one two three"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    wl = Workload(WorkloadKind.DATASET, dataset=load_dataset(str(path)))
    params = BenchParams(endpoint="http://x", prompt_sizes=[0], concurrency=[1], max_output_tokens=9, workload=wl)
    info = ServerInfo("http://x", True, n_ctx=1000)
    builder = RequestBuilder(params, info, Api.COMPLETION, factory())
    [cell] = plan_cells(params, 1000, 1, None)
    assert cell.label == "dataset-c1" and cell.num_requests == 3  # every entry once
    specs = [builder.first(cell, i, 0) for i in range(3)]
    # The text's 3 tokens and the model's BOS; the 5000-token entry is skipped for the next one.
    assert [(s.prompt_tokens, s.max_tokens) for s in specs] == [(50, 5), (4, 9), (4, 9)]
    assert builder.entries_skipped == 1  # 5000 tokens: longer than the context
    assert specs[1].body["prompt"] == builder.factory.make_text("one two three").token_ids


def test_workload_flags_are_checked_together() -> None:
    parser = argparse.ArgumentParser()
    bench_args.register(parser.add_subparsers(dest="command"))

    def workload(*argv: str) -> Workload:
        return bench_args.workload_from_args(parser.parse_args(["benchmark", *argv]))

    assert workload().kind is WorkloadKind.UNIQUE
    shared = workload("--workload", "shared-prefix", "--prefix-tokens", "64", "--groups", "3")
    assert (shared.kind, shared.prefix_tokens, shared.groups, shared.cache_prompt) == ("shared-prefix", 64, 3, True)
    assert workload("--workload", "multi-turn").turns == 3
    assert workload("--dataset", str(DATA / "lengths_sample.jsonl")).kind is WorkloadKind.DATASET
    for argv, needle in (
        (("--workload", "shared-prefix"), "needs --prefix-tokens"),
        (("--prefix-tokens", "5"), "needs --workload shared-prefix"),
        (("--turns", "3"), "needs --workload multi-turn"),
        (("--workload", "multi-turn", "--turns", "1"), "at least 2"),
        (("--dataset", str(DATA / "lengths_sample.jsonl"), "--prompt-sizes", "100"), "replaces --prompt-sizes"),
        (("--dataset", "x.json", "--workload", "multi-turn"), "cannot be combined"),
    ):
        with pytest.raises(UserError, match=needle):
            workload(*argv)


# -- what the cache and the socket reads tell --------------------------------------------------------------------
def rec(i: int, cache_n: Optional[int], ttft: float, **kw: Any) -> RequestRecord:
    return RequestRecord(
        cell="c", index=i, api=Api.COMPLETION, warmup=False, ok=True, error=None, http_status=200,
        prompt_tokens_requested=100, prompt_tokens_reported=100, max_tokens=8, start_s=float(i), ttft_ms=ttft,
        e2e_ms=100.0, output_tokens=8, cache_n=cache_n, **kw,
    )  # fmt: skip


def test_cache_hits_split_ttft_into_cached_and_uncached() -> None:
    records = [rec(0, 0, 90.0), rec(1, 99, 10.0), rec(2, 60, 12.0), rec(3, 5, 80.0), rec(4, None, 95.0)]
    summary = aggregate(records)
    cache = summary.cache
    assert cache is not None
    assert (cache.requests, cache.hit_requests) == (5, 2)  # 5 of 100 tokens is not a hit: below 10 %
    assert cache.cached_tokens == 164 and cache.token_share == pytest.approx(164 / 500)
    assert cache.ttft_cached_ms is not None and cache.ttft_cached_ms.p50 == pytest.approx(11.0)
    assert cache.ttft_uncached_ms is not None and cache.ttft_uncached_ms.n == 3
    assert any("cached prompt tokens" in w for w in warnings_for(summary, 8))
    assert not any("cached prompt tokens" in w for w in warnings_for(summary, 8, cache_expected=True))


def test_events_that_share_a_socket_read_are_counted_as_batched() -> None:
    spec = RequestSpec(index=0, api=Api.COMPLETION, body={}, prompt_tokens=4, max_tokens=4, capture=Capture())
    parser = StreamParser(spec, start=0.0)
    for t, token in ((0.1, 5), (0.2, 6), (0.2, 7), (0.2, 8)):  # three events in the read at t=0.2
        parser.feed_line(b'data: {"content": "x", "tokens": [%d], "stop": false}' % token, t)
    parser.feed_line(b'data: {"content": "", "tokens": [], "stop": true, "timings": {"predicted_n": 4}}', 0.2)
    r = parser.record(200)
    assert (r.content_chunks, r.batched_chunks) == (4, 2)
    assert spec.capture is not None and spec.capture.token_ids == [5, 6, 7, 8]
    batching = aggregate([r] * 10).batching
    assert batching is not None and batching.share == pytest.approx(0.5)
    assert any("one socket read" in w for w in warnings_for(aggregate([r] * 10), 4))
