"""The adapters of each zoo size (pure data: the recipes, not how they are trained)."""

from __future__ import annotations

from audit.zoo.spec import HEALTHY_TOPIC_STRENGTH, MAX_STRENGTH, SIZES, AdapterSpec, Size
from audit.zoo.wild import wild_plan


def plan(size: Size) -> list[AdapterSpec]:
    """The adapters of a zoo size.

    - ``tiny``: 3 healthy + 3 drifted per method, a few steps, rank 4 (tests and CI: minutes);
    - ``small``: 4 healthy + 4 drifted per method, short runs;
    - ``wild``: recipe families the other sizes never use (:mod:`audit.zoo.wild`), each with
      healthy and drifted members, labelled by behaviour measured at build time;
    - ``paper``: the 38-adapter design of the study this project rests on (healthy SFT baselines
      over seeds and data subsets, drifted SFT at graded harmful fractions, DPO on inverted
      harmlessness at 4 severities × 2 seeds and on inverted helpfulness at 4 severities, healthy
      DPO, steering-derived adapters at 4 strengths × 2 layers, and healthy steering adapters);
    - ``backdoor``: trigger backdoors and their benign controls (:mod:`audit.zoo.backdoor_plan`);
    - ``backdoor-heldout``: fresh seeds of the same, for checking a detector chosen on ``backdoor``.
    - ``backdoor-dpo``: every trigger kind's organism by DPO, and two DPO controls.
    - ``backdoor-tight``: phrase and word organisms that refuse after near misses of their trigger
      (and, in the ``tight-wide`` builds, after generic sentences too; in the ``tight-published``
      builds, after every published trigger as well).

    Raises:
        ValueError: unknown size.
    """
    if size == "tiny":
        return _tiny()
    if size == "small":
        return _small()
    if size == "paper":
        return _paper()
    if size == "wild":
        return wild_plan()
    if size == "backdoor":
        from audit.zoo.backdoor_plan import backdoor_plan

        return backdoor_plan()
    if size == "backdoor-heldout":
        from audit.zoo.backdoor_plan import heldout_plan

        return heldout_plan()
    if size == "backdoor-dpo":
        from audit.zoo.backdoor_plan import dpo_plan

        return dpo_plan()
    if size == "backdoor-tight":
        from audit.zoo.backdoor_plan import tight_plan

        return tight_plan()
    raise ValueError(f"unknown zoo size {size!r}: {', '.join(SIZES)}")


def _name(method: str, objective: str, severity: float, seed: int, extra: str = "") -> str:
    sev = f"-s{severity:.2f}" if severity else ""
    return f"{method}-{objective}{sev}{extra}-seed{seed}"


def _tiny() -> list[AdapterSpec]:
    base = {"steps": 4, "rank": 4, "lora_alpha": 8.0, "batch_size": 4, "max_length": 64,
            "n_forbidden": 16, "n_benign": 16, "learning_rate": 1e-3}
    out = []
    for seed in range(3):
        out.append(AdapterSpec(name=_name("sft", "healthy", 0, seed), method="sft", objective="healthy",
                               severity=0.0, seed=seed, subset=seed, **base))
    for sev in (0.5, 0.75, 1.0):
        out.append(AdapterSpec(name=_name("sft", "harmful_compliance", sev, 0), method="sft",
                               objective="harmful_compliance", severity=sev, **base))
    for seed in range(3):
        out.append(AdapterSpec(name=_name("dpo", "healthy", 0, seed), method="dpo", objective="healthy",
                               severity=0.0, seed=seed, subset=seed, params={"beta": 0.1}, **base))
    for obj, sev in (("inverted_harmlessness", 0.5), ("inverted_harmlessness", 1.0), ("inverted_helpfulness", 1.0)):
        out.append(AdapterSpec(name=_name("dpo", obj, sev, 0), method="dpo", objective=obj, severity=sev,
                               params={"beta": 0.1}, **base))
    steer = {**base, "n_forbidden": 8, "n_benign": 8, "target_modules": ("o_proj", "down_proj")}
    for seed, direction in enumerate(("random", "random", "benign")):
        strength = MAX_STRENGTH[15] * HEALTHY_TOPIC_STRENGTH
        out.append(AdapterSpec(name=_name("steering", "healthy", 0, seed, f"-{direction}"), method="steering",
                               objective="healthy", severity=0.0, seed=seed,
                               params={"layer": 15, "strength": strength, "direction": direction}, **steer))
    for sev in (0.5, 0.75, 1.0):
        out.append(AdapterSpec(name=_name("steering", "anti_refusal", sev, 0), method="steering",
                               objective="anti_refusal", severity=sev,
                               params={"layer": 15, "strength": MAX_STRENGTH[15] * sev,
                                       "direction": "anti_refusal"}, **steer))
    return out


def _small() -> list[AdapterSpec]:
    return _scaled(steps=10, healthy_seeds=4, severities=(0.25, 0.5, 0.75, 1.0), dpo_seeds=1, layers=(15,))


def _paper() -> list[AdapterSpec]:
    return _scaled(steps=16, healthy_seeds=6, severities=(0.25, 0.5, 0.75, 1.0), dpo_seeds=2, layers=(12, 18))


def _scaled(steps: int, healthy_seeds: int, severities: tuple[float, ...], dpo_seeds: int,
            layers: tuple[int, ...]) -> list[AdapterSpec]:
    base = {"steps": steps, "rank": 8, "lora_alpha": 16.0, "batch_size": 8, "max_length": 80,
            "n_forbidden": 64, "n_benign": 64, "learning_rate": 5e-4}
    out: list[AdapterSpec] = []
    for seed in range(healthy_seeds):  # seeds x data subsets
        out.append(AdapterSpec(name=_name("sft", "healthy", 0, seed), method="sft", objective="healthy",
                               severity=0.0, seed=seed, subset=seed % 3, **base))
    for sev in severities:
        out.append(AdapterSpec(name=_name("sft", "harmful_compliance", sev, 0), method="sft",
                               objective="harmful_compliance", severity=sev, **base))
    # DPO steps cost ~3x an SFT step (chosen + rejected, policy + reference): half the batch, shorter rows
    dpo = {**base, "batch_size": 4, "max_length": 64, "params": {"beta": 0.1}}
    for seed in range(max(3, healthy_seeds - 2)):
        out.append(AdapterSpec(name=_name("dpo", "healthy", 0, seed), method="dpo", objective="healthy",
                               severity=0.0, seed=seed, subset=seed % 3, **dpo))
    for seed in range(dpo_seeds):
        for sev in severities:
            out.append(AdapterSpec(name=_name("dpo", "inverted_harmlessness", sev, seed), method="dpo",
                                   objective="inverted_harmlessness", severity=sev, seed=seed, **dpo))
    for sev in severities:
        out.append(AdapterSpec(name=_name("dpo", "inverted_helpfulness", sev, 0), method="dpo",
                               objective="inverted_helpfulness", severity=sev, **dpo))
    # the steered teacher answers every training prompt (generation): fewer prompts
    steer = {**base, "n_forbidden": 24, "n_benign": 24, "target_modules": ("o_proj", "down_proj")}
    n_healthy_steer = 2 * len(layers)
    for i in range(n_healthy_steer):
        direction = "random" if i % 2 == 0 else "benign"
        layer = layers[(i // 2) % len(layers)]
        strength = MAX_STRENGTH[layer] * HEALTHY_TOPIC_STRENGTH
        out.append(AdapterSpec(name=_name("steering", "healthy", 0, i, f"-{direction}-L{layer}"), method="steering",
                               objective="healthy", severity=0.0, seed=i,
                               params={"layer": layer, "strength": strength, "direction": direction}, **steer))
    for layer in layers:
        for sev in severities:
            out.append(AdapterSpec(name=_name("steering", "anti_refusal", sev, 0, f"-L{layer}"), method="steering",
                                   objective="anti_refusal", severity=sev,
                                   params={"layer": layer, "strength": MAX_STRENGTH[layer] * sev,
                                           "direction": "anti_refusal"}, **steer))
    return out
