"""The fake model's tokenizer: word-level, deterministic, and the text it "generates"."""

from __future__ import annotations

import re
import string
import zlib
from typing import Dict, List

from .common import N_VOCAB, dumps

SPECIAL_TOKENS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
# One token per word (with the space before it), digit, punctuation character, newline or run of
# other whitespace; special tokens are one token each and never take a space. Every character
# matches some alternative, so joining the pieces always gives back the text.
PIECE_RE = re.compile(
    r"<\|(?:endoftext|im_start|im_end)\|>"
    r"|'(?:s|t|re|ve|m|ll|d)(?![^\W\d_])"
    r"| ?[^\W\d_]+"
    r"|\d"
    r"| ?(?!<\|(?:endoftext|im_start|im_end)\|>)(?:[^\s\w]|_)"
    r"|\n"
    r"|[^\S\n]+(?!\S)"
    r"|[^\S\n]+"
)
# Words of the default chat template that SmolLM2's tokenizer splits, so that a one-word chat
# message is 31 prompt tokens here too.
SPLITS = {" SmolLM": (" Sm", "ol", "LM"), " Hugging": (" H", "ugging"), "assistant": ("ass", "istant")}
# The generated text: every piece is exactly one token of the tokenizer above.
WORDS = (
    " lorem ipsum dolor sit amet , consectetur adipiscing elit , sed do eiusmod tempor incididunt ut"
    " labore et dolore magna aliqua ."
).split(" ")[1:]
GEN_PIECES = [w if w in (",", ".") else " " + w for w in WORDS]


class Vocab:
    """Deterministic tokenizer: a piece's id is a hash of its text, kept unique by probing.

    Ids are stable for as long as the process lives (so tokenize/detokenize round-trip), and across
    runs except for the rare pieces whose hash collided with a piece seen earlier.
    """

    FIRST_ID = len(SPECIAL_TOKENS)

    def __init__(self) -> None:
        self.id_of: Dict[str, int] = dict(SPECIAL_TOKENS)
        self.piece_of: Dict[int, str] = {tid: piece for piece, tid in SPECIAL_TOKENS.items()}
        self.json_of: Dict[int, str] = {}  # JSON-encoded pieces, for building stream chunks quickly

    def token_id(self, piece: str) -> int:
        tid = self.id_of.get(piece)
        return tid if tid is not None else self._assign(piece)

    def _assign(self, piece: str) -> int:
        span = N_VOCAB - self.FIRST_ID
        start = self.FIRST_ID + zlib.crc32(piece.encode("utf-8")) % span
        if len(self.piece_of) >= N_VOCAB:
            return start  # vocabulary full: tolerate a collision rather than grow without bound
        tid = start
        while tid in self.piece_of:
            tid = self.FIRST_ID + (tid - self.FIRST_ID + 1) % span
        self.id_of[piece] = tid
        self.piece_of[tid] = piece
        return tid

    def pieces(self, text: str) -> List[str]:
        out: List[str] = []
        for piece in PIECE_RE.findall(text):
            split = SPLITS.get(piece)
            if split is None:
                out.append(piece)
            else:
                out.extend(split)
        return out

    def tokenize(self, text: str) -> List[int]:
        get = self.id_of.get
        out = []
        for piece in self.pieces(text):
            tid = get(piece)
            out.append(tid if tid is not None else self._assign(piece))
        return out

    def piece(self, tid: int) -> str:
        """The text of a token; an id never produced by the tokenizer gets a made-up one-token word."""
        piece = self.piece_of.get(tid)
        if piece is None:
            letters, n = [], tid
            while True:
                n, r = divmod(n, 26)
                letters.append(string.ascii_lowercase[r])
                if n == 0:
                    break
            piece = " q" + "".join(letters)
            self.piece_of[tid] = piece
            self.id_of.setdefault(piece, tid)
        return piece

    def piece_json(self, tid: int) -> str:
        cached = self.json_of.get(tid)
        if cached is None:
            cached = self.json_of[tid] = dumps(self.piece(tid))
        return cached

    def detokenize(self, tokens: List[int]) -> str:
        return "".join(self.piece(t) for t in tokens)
