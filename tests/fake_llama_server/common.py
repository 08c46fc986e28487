"""What every part of the fake shares: the fake model's sizes, compact JSON, error bodies and the two exceptions."""

from __future__ import annotations

import json
import os
import string
from typing import Any, Dict

BUILD_INFO = "b0-fake"
N_VOCAB = 49152  # SmolLM2's vocabulary size: token ids outside [0, N_VOCAB) are invalid
N_CTX_TRAIN = 8192  # what `-c 0` ("from the model") resolves to


def dumps(obj: Any) -> str:
    """Compact JSON with raw UTF-8, as nlohmann::json prints it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def random_id(n: int) -> str:
    """n random letters and digits (os.urandom: importing `random` costs start-up time)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(alphabet[b % len(alphabet)] for b in os.urandom(n))


def error_body(code: int, message: str, kind: str, **extra: Any) -> Dict[str, Any]:
    return {"error": {"code": code, "message": message, "type": kind, **extra}}


class HttpError(Exception):
    def __init__(self, status: int, payload: Dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.payload = payload


class ClientGone(Exception):
    """The client closed its connection; the request is cancelled, like llama.cpp does."""
