"""A fake llama-server: llama.cpp's HTTP API, log lines and failure modes, without a model.

It answers like the real llama-server (recorded in the project's llama-server reference): the same
endpoints, JSON shapes, SSE chunks, Prometheus text, errors and exit codes. A deterministic word-level
tokenizer stands in for the model's, and "generation" cycles through fixed words at a set pace.
Extra flags make it slow, broken or stuck on purpose:

  --prompt-tps F          prefill speed in tokens/s (default 2000)
  --token-interval-ms F   gap between generated tokens (default 5; 0 = as fast as possible)
  --load-delay S          seconds of "loading model" (port open, everything answers 503)
  --fail-start            fail to load the model like llama.cpp does (exit 1)
  --crash-after N         die (exit 1) halfway through the completion request after the first N
  --hang-after N          completion requests after the first N stall forever halfway; the process lives
  --metrics-update M      `request` (default, like current llama.cpp builds): token counters move only
                          when a request ends; `token`: with every token

Standard library only (quick to start, no venv needed), for any python3 >= 3.10.

Run it as tests/bin/llama-server does: `python -S tests/fake_llama_server/__main__.py ARGS`. One
concept per module, each importing only the ones before it:

  common      the fake model's sizes, compact JSON, error bodies, HttpError and ClientGone
  log         llama.cpp's log lines
  options     the command line (Options, parse_args, usage)
  vocab       the word-level tokenizer and the generated text
  chat        the chat template
  metrics     the /metrics counters and their Prometheus text
  slots       Slot, SlotPool (slot choice, the deferred queue) and Task
  generation  GenRequest (parsed from a request body) and Outcome (timings, usage)
  formats     ApiFormat: each API's response bodies and SSE events
  httpio      HTTP/1.1 requests and responses, SSE over chunked encoding
  engine      running a completion in a slot: prefill, token schedule, faults, timings
  handlers    the endpoints
  app         FakeServer (connections, routing, life cycle) and main()

This file re-exports what the unit tests use and imports nothing that pulls in asyncio: with
`python -m`, it runs before __main__.py can keep ssl out.
"""

from .log import Log
from .options import Options, UsageError, parse_args, usage
from .vocab import Vocab

__all__ = ["Log", "Options", "UsageError", "Vocab", "parse_args", "usage"]
