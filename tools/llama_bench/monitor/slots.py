"""What llama-server's /slots list says: busy slots, context fill, and tokens decoded so far."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class SlotsSummary:
    """Summary of llama-server's /slots list.

    total            number of slots reported
    busy             slots with is_processing true
    n_ctx_per_slot   context size of one slot (largest reported), None when unknown
    ctx_used         tokens in use across busy slots (prompt tokens + tokens decoded so far)
    ctx_fill         ctx_used / summed n_ctx of busy slots; 0.0 when no slot is busy, None when
                     there is no slots information
    n_decoded        tokens generated so far by the busy slots' current requests; unlike
                     /metrics counters (updated when a request ends) this moves while generating
    slots_used       per-slot tokens in use, 0 for idle slots, in list order
    """

    total: int = 0
    busy: int = 0
    n_ctx_per_slot: Optional[int] = None
    ctx_used: int = 0
    ctx_fill: Optional[float] = None
    n_decoded: int = 0
    slots_used: List[int] = field(default_factory=list)


def _int_or_none(value: Any) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value)


def _decoded(slot: Dict[str, Any]) -> int:
    # Current servers send next_token as an object; older ones as a list of objects.
    nxt = slot.get("next_token")
    if isinstance(nxt, list):
        nxt = nxt[0] if nxt else None
    if isinstance(nxt, dict):
        return max(0, _int_or_none(nxt.get("n_decoded")) or 0)
    return max(0, _int_or_none(slot.get("n_decoded")) or 0)


def _is_processing(slot: Dict[str, Any]) -> bool:
    if "is_processing" in slot:
        return bool(slot.get("is_processing"))
    # Older servers reported a numeric state (0 = idle).
    state = _int_or_none(slot.get("state"))
    return bool(state)


def summarize_slots(slots_json: Any) -> SlotsSummary:
    """Summarize a /slots response; anything that is not a list gives an empty summary."""
    if not isinstance(slots_json, list):
        return SlotsSummary()
    slots = [s for s in slots_json if isinstance(s, dict)]
    if not slots:
        return SlotsSummary()
    busy = 0
    used_total = 0
    busy_ctx = 0
    decoded_total = 0
    per_slot: List[int] = []
    ctx_sizes: List[int] = []
    for slot in slots:
        n_ctx = _int_or_none(slot.get("n_ctx"))
        if n_ctx is not None and n_ctx > 0:
            ctx_sizes.append(n_ctx)
        used = 0
        if _is_processing(slot):
            busy += 1
            decoded = _decoded(slot)
            # Current llama-server counts generated tokens into n_prompt_tokens (the slot's whole
            # sequence), older ones do not: the larger of the two never double counts.
            used = max(max(0, _int_or_none(slot.get("n_prompt_tokens")) or 0), decoded)
            if n_ctx is not None and n_ctx > 0:
                # Context shift keeps a slot within n_ctx, so more would be a counting artefact.
                used = min(used, n_ctx)
                busy_ctx += n_ctx
            decoded_total += decoded
        used_total += used
        per_slot.append(used)
    if busy == 0:
        fill: Optional[float] = 0.0
    else:
        fill = used_total / busy_ctx if busy_ctx > 0 else None
    return SlotsSummary(
        total=len(slots),
        busy=busy,
        n_ctx_per_slot=max(ctx_sizes) if ctx_sizes else None,
        ctx_used=used_total,
        ctx_fill=fill,
        n_decoded=decoded_total,
        slots_used=per_slot,
    )
