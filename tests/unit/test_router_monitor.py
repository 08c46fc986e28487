"""Router mode (`--models-dir`): figures per model added up, unloads and reloads never look like a restart."""

from __future__ import annotations

from typing import Dict, Tuple

from tools.llama_bench.http import Response
from tools.llama_bench.monitor.router import RouterScraper, is_router


def metrics(prompt: int, gen: int, processing: int = 0) -> str:
    return (
        "# TYPE llamacpp:prompt_tokens_total counter\n"
        f"llamacpp:prompt_tokens_total {prompt}\n"
        "# TYPE llamacpp:tokens_predicted_total counter\n"
        f"llamacpp:tokens_predicted_total {gen}\n"
        "# TYPE llamacpp:requests_processing gauge\n"
        f"llamacpp:requests_processing {processing}\n"
    )


class Router:
    """A stub router: models with a state and per-model /metrics text."""

    def __init__(self) -> None:
        self.models: Dict[str, Tuple[str, str]] = {}
        self.timeout = 1.0

    def get(self, path: str, timeout: float = 1.0) -> Response:
        name = path.split("model=", 1)[-1]
        if path.startswith("/metrics?"):
            return Response(200, self.models[name][1])
        return Response(404, "")

    def get_json(self, path: str, timeout: float = 1.0) -> object:
        if path == "/v1/models":
            return {"data": [{"id": n, "status": {"value": s}} for n, (s, _) in self.models.items()]}
        if path.startswith("/slots?"):
            return [{"id": 0, "is_processing": False, "n_ctx": 1024}]
        return None


def test_a_router_is_recognised_by_its_props() -> None:
    assert is_router({"role": "router", "max_instances": 4})
    assert not is_router({"total_slots": 4}) and not is_router(None)


def test_counters_of_all_loaded_models_add_up_and_survive_unload_and_reload() -> None:
    router, scraper = Router(), RouterScraper()
    router.models = {"alpha": ("loaded", metrics(100, 10)), "beta": ("unloaded", "")}
    values, slots, states = scraper.scrape(router)  # type: ignore[arg-type]
    assert values["prompt_tokens_total"] == 0  # the first scrape is the baseline, as for one server
    assert [(s.name, s.status) for s in states] == [("alpha", "loaded"), ("beta", "unloaded")]
    assert slots is not None and slots.total == 1

    router.models = {"alpha": ("loaded", metrics(130, 25, processing=1)), "beta": ("loaded", metrics(31, 8))}
    values, _, states = scraper.scrape(router)  # type: ignore[arg-type]
    # alpha grew by 30/15; beta loaded after the start, so all of its work counts
    assert (values["prompt_tokens_total"], values["tokens_predicted_total"]) == (61, 23)
    assert values["requests_processing"] == 1 and states[0].requests_processing == 1

    router.models = {"alpha": ("unloaded", ""), "beta": ("loaded", metrics(31, 8))}
    values, _, _ = scraper.scrape(router)  # type: ignore[arg-type]
    assert values["prompt_tokens_total"] == 61  # alpha's counters vanished: what it did stays counted

    router.models = {"alpha": ("loaded", metrics(5, 2)), "beta": ("loaded", metrics(31, 8))}
    values, _, _ = scraper.scrape(router)  # type: ignore[arg-type]
    assert values["prompt_tokens_total"] == 66  # reloaded, counting from zero again: +5, never negative


def test_the_token_counters_exist_at_zero_before_any_model_is_loaded() -> None:
    """A counter that first appeared with the first loaded model would be taken as its baseline and the
    model's first requests (the ones that loaded it) never shown."""
    from tools.llama_bench.monitor.metrics import MetricsSample, RateTracker

    router, scraper, tracker = Router(), RouterScraper(), RateTracker()
    router.models = {"alpha": ("unloaded", "")}
    values, _, _ = scraper.scrape(router)  # type: ignore[arg-type]
    assert values["tokens_predicted_total"] == 0 and values["prompt_tokens_total"] == 0
    tracker.update(MetricsSample(t=0.0, values=values))
    router.models = {"alpha": ("loaded", metrics(31, 8))}
    values, _, _ = scraper.scrape(router)  # type: ignore[arg-type]
    rates = tracker.update(MetricsSample(t=1.0, values=values))
    assert rates.gen_tokens_total == 8
