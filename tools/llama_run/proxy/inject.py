"""The invisible `stream_options.include_usage`: asking the upstream for a usage chunk the client did not ask
for, and taking that chunk out again so that the client gets byte for byte what it would have got directly.

llama.cpp reports `timings` on the last chunk of every stream anyway, so by default (`auto`) nothing is
injected there; other OpenAI-compatible servers only report tokens in that extra chunk. llama.cpp moves
`timings` from the finish chunk onto the usage chunk when usage is on: when the stripped chunk carries
them, they are put back at the end of the finish chunk, where llama.cpp writes them without usage.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional, Tuple

from .config import InjectMode
from .records import Endpoint

INCLUDE_USAGE = b'"stream_options":{"include_usage":true}'
_FINISH = b'"finish_reason":"'
MAX_LINE = 1024 * 1024  # a longer line is passed on as it is


def wants_injection(mode: InjectMode, endpoint: Endpoint, body: Any, upstream_is_llama: bool) -> bool:
    """A streaming OpenAI request that did not ask for usage, to an upstream that needs asking."""
    if mode is InjectMode.NEVER or endpoint is Endpoint.COMPLETION:
        return False
    if not isinstance(body, dict) or body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return False  # the client asked for usage: it gets it, nothing is stripped
    return mode is InjectMode.ALWAYS or not upstream_is_llama


def inject_body(raw: bytes, body: Any) -> bytes:
    """The request body with include_usage on; the client's own bytes stay as they are where possible."""
    if isinstance(body, dict) and "stream_options" not in body:
        start = raw.find(b"{")
        if start >= 0:
            return raw[: start + 1] + INCLUDE_USAGE + b"," + raw[start + 1 :]
    obj = dict(body)
    options = obj.get("stream_options")
    obj["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def is_usage_chunk(payload: bytes) -> bool:
    """`{"choices":[], ..., "usage":{...}}`: the chunk include_usage adds (any other usage is left alone)."""
    if b'"usage"' not in payload or b'"choices"' not in payload:
        return False
    try:
        obj = json.loads(payload)
    except ValueError:
        return False
    return isinstance(obj, dict) and obj.get("choices") == [] and isinstance(obj.get("usage"), dict)


def raw_member(payload: bytes, key: bytes) -> Optional[bytes]:
    """The raw bytes of the JSON object value of `key` in `payload` (no re-encoding: numbers stay as written)."""
    at = payload.find(b'"' + key + b'":')
    if at < 0:
        return None
    start = payload.find(b"{", at)
    if start < 0:
        return None
    depth, i, in_str = 0, start, False
    while i < len(payload):
        c = payload[i]
        if in_str:
            if c == 0x5C:  # backslash: skip the escaped character
                i += 1
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return payload[start : i + 1]
        i += 1
    return None


class UsageStripper:
    """Filters one SSE answer: drops the injected usage event (its `data:` line and the blank line ending it).

    Complete lines are passed on at once; only a line cut in two by the network waits for its end. With
    `restore_timings` (llama.cpp), the finish chunk waits for the next event, which tells whether timings
    must be moved back onto it; llama.cpp sends both in one write, so that wait is not observable.
    """

    def __init__(self, restore_timings: bool) -> None:
        self.restore_timings = restore_timings
        self.stripped = False
        self._tail = b""  # an incomplete line
        self._held: List[bytes] = []  # the finish event's lines, while waiting for what follows
        self._skip_blank = False
        self._usage_line = b""

    def feed(self, data: bytes) -> bytes:
        if self._tail:
            data = self._tail + data
            self._tail = b""
        out: List[bytes] = []
        start, end = 0, len(data)
        while start < end:
            nl = data.find(b"\n", start)
            if nl < 0:
                rest = data[start:]
                if len(rest) > MAX_LINE:
                    out.append(rest)  # not an SSE line we could judge: pass it on
                else:
                    self._tail = rest
                break
            self._line(data[start : nl + 1], out)
            start = nl + 1
        return b"".join(out)

    def flush(self) -> bytes:
        """At the end of the answer: whatever is still held, unchanged."""
        out = b"".join(self._held) + self._tail
        self._held, self._tail = [], b""
        return out

    def _line(self, line: bytes, out: List[bytes]) -> None:
        if self._skip_blank:
            self._skip_blank = False
            if line in (b"\n", b"\r\n"):
                return
        if self._held:
            if line in (b"\n", b"\r\n") and len(self._held) == 1:
                self._held.append(line)  # the blank line ending the finish event
                return
            if line.startswith(b"data:") and is_usage_chunk(line[5:]):
                self._strip(line)
                out.extend(self._restored())
                return
            out.extend(self._held)
            self._held = []
        if line.startswith(b"data:"):
            payload = line[5:]
            if not self.stripped and is_usage_chunk(payload):
                self._strip(line)
                return
            if self.restore_timings and not self.stripped and _FINISH in payload and b'"timings"' not in payload:
                self._held = [line]
                return
        out.append(line)

    def _strip(self, line: bytes) -> None:
        self.stripped = True
        self._skip_blank = True
        self._usage_line = line

    def _restored(self) -> List[bytes]:
        """The held finish event, with the stripped chunk's timings appended as its last member."""
        held, self._held = self._held, []
        timings = raw_member(self._usage_line[5:], b"timings")
        if timings is None:
            return held
        first = held[0]
        body, eol = _split_eol(first)
        close = body.rstrip().rfind(b"}")
        if close < 0:
            return held
        held[0] = body[:close] + b',"timings":' + timings + body[close:] + eol
        return held


def _split_eol(line: bytes) -> Tuple[bytes, bytes]:
    if line.endswith(b"\r\n"):
        return line[:-2], b"\r\n"
    if line.endswith(b"\n"):
        return line[:-1], b"\n"
    return line, b""
