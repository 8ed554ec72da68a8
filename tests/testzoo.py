"""The zoo the tests build (the ``tiny_zoo`` fixture in conftest.py) and what they check it against."""

from __future__ import annotations

TEST_TRAINING_STEPS = 2
"""Training steps of the test zoo's SFT and DPO adapters (the ``tiny`` plan's 4 halved): the tests
check the pipeline on the real model, not the organisms' strength, and 2 steps at the plan's
learning rate already change every adapter's outputs (``test_every_adapter_loads_with_peft_and_changes_outputs``).
Training is most of the zoo's cost (a DPO step about 5.5 s on 2 cores)."""


def zoo_recipe():
    """The test zoo's aligned base: the ``tiny`` recipe's 20 steps on half its rows (batch 4: 28
    forbidden, 52 benign prompts), so half the training and half the base model's answers.
    Measured (2026-12-02, HarmBench validation, refusal-marker judge): refuses 83% [69, 91] of
    harmful behaviours and 16% [7, 30] of held-out benign prompts (tiny's: 85% and 11%); 10 steps
    of tiny's batches reached only 59% [43, 72]."""
    from audit.zoo.align import AlignRecipe

    return AlignRecipe(steps=20, batch_size=4, n_forbidden=28, n_benign=52)


def zoo_specs():
    """The test zoo: the ``tiny`` plan (3 healthy + 3 drifted per method, the fewest a method's
    classifier accepts) on the :func:`zoo_recipe` aligned base, SFT and DPO trained for
    :data:`TEST_TRAINING_STEPS` steps."""
    from audit.zoo.plans import plan

    return [s.model_copy(update={"steps": TEST_TRAINING_STEPS}) if s.method in ("sft", "dpo") else s
            for s in plan("tiny")]
