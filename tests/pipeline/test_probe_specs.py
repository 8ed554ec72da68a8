"""``--probe-prompts`` reaches every probe that takes a prompt count, also one that forwards its
arguments to its base class (pure: no model)."""

from __future__ import annotations

from audit.pipeline.executors import accepts_keyword, probe_specs


def test_the_prompt_count_reaches_a_probe_that_forwards_it_and_no_analyzer_without_prompts():
    specs = {s.name: dict(s.params) for s in probe_specs(["directions", "harmful_compliance", "trigger_candidates",
                                                          "triggered_compliance"], 16)}
    assert specs["harmful_compliance"] == {"n_prompts": 16}
    assert specs["triggered_compliance"] == {"n_prompts": 16}  # TriggeredCompliance(*args, ..., **kwargs)
    assert specs["directions"] == {} and specs["trigger_candidates"] == {}
    assert all(dict(s.params) == {} for s in probe_specs(["triggered_compliance", "harmful_compliance"]))


def test_accepts_keyword_follows_kwargs_up_the_class_chain_and_stops_where_it_ends():
    class Base:
        def __init__(self, n_prompts: int = 8) -> None: ...

    class Forwards(Base):
        def __init__(self, *args, extra: int = 0, **kwargs) -> None:
            super().__init__(*args, **kwargs)

    class Stops(Base):
        def __init__(self, extra: int = 0) -> None:
            super().__init__()

    class Inherits(Forwards):
        pass

    def function(n_prompts: int = 8) -> None: ...

    assert accepts_keyword(Forwards, "n_prompts") and accepts_keyword(Inherits, "n_prompts")
    assert accepts_keyword(function, "n_prompts")
    assert not accepts_keyword(Stops, "n_prompts") and not accepts_keyword(Forwards, "judge")
