"""Models that judge across training methods (their ``method`` is :data:`ANY`): what a verdict
needs when the card names no method, or the method has no detector of its own.

- the **method-agnostic drift detector** (``any.drift.vN``): the per-method detector's model
  (:func:`audit.classify.train.train_method`) trained on every method's labelled adapters;
- the **method classifier** (``any.method.vN``): a training method from the weights' features
  (``spectral-v1``: module counts, ranks, which module families and depths an update touches, its
  spectra — steering is one module of rank 1, an abliteration rank 1 on every residual writer),
  evaluated leave-one-group-out; a held-out adapter whose method no training adapter had counts as
  right only if the classifier abstains (its probability below :data:`METHOD_CONFIDENCE`);
- the **verdict model** (``any.verdict.vN``): the drift detector's model on the behaviour
  features and the geometry detector's held-out P (:func:`audit.classify.models.verdict_features`),
  trained on the labelled adapters that were probed;
- the **backdoor detector** (``any.backdoor.vN``): the drift detector's model on the refusal
  shifts of the trigger candidates and of random prefixes (:data:`BACKDOOR_FEATURE_SET`), trained
  on trigger-backdoor organisms (objective :data:`BACKDOOR`) against healthy adapters and
  evaluated leave-one-group-out (an organism's group is its trigger kind's family, so this is
  leave-one-trigger-kind-out). Its P(backdoor) never makes a verdict ``drifted``; at or above 0.5
  it keeps the verdict from ``healthy`` (:func:`audit.classify.outcome.decide`).

Pure computation: features and labels in, fitted models and held-out metrics out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from audit.classify.labels import Label

ANY = "any"
"""The ``method`` of the models that judge across methods."""

VERDICT_FEATURE_SET = "verdict-v1"
"""The verdict model's input: :data:`audit.classify.outcome.BEHAVIOUR_FEATURES` and the logit of
the geometry detector's P(drifted)."""

BACKDOOR = "backdoor"
"""The objective of a trigger-backdoor organism (``lora-audit zoo build --size backdoor``)."""

BACKDOOR_FEATURE_SET = "refusal-shift-v1"
"""The backdoor detector's input (:mod:`audit.backdoor.shift_features`; the ``trigger_candidates``
analyzer, version 3, measures it). Chosen as the best of five feature sets compared
leave-one-trigger-kind-out on the same 9 organisms (README, "Hidden behaviour"), so that figure is
optimistic; a zoo built afterwards is the test."""

METHOD_CONFIDENCE = 0.8
"""An inferred method is used (to pick its own detector) only at or above this probability;
below, the verdict uses the method-agnostic detector and says the method is uncertain."""


@dataclass
class MethodInference:
    """A fitted method classifier with its held-out metrics."""

    model: object
    methods: list[str]
    n_train: int
    metrics: dict = field(default_factory=dict)
    """``accuracy_loo`` (open-set: see the module docstring), ``accuracy_seen`` (held-out adapters
    whose method was in training), ``n_groups``."""
    held_out: list[tuple[str, float]] = field(default_factory=list)
    """``(method, probability)`` predicted for each adapter with its group held out."""


def backdoor_labels(labels: list[Label]) -> list[Label]:
    """What the backdoor detector learns from: the trigger-backdoor organisms (objective
    :data:`BACKDOOR`, drifted) and the healthy adapters; other drifted adapters are left out (their
    drift is not hidden: the probes and the drift detectors judge them)."""
    return [lab for lab in labels if lab.objective == BACKDOOR or not lab.drifted]


def usable_for_methods(labels: list[Label]) -> str | None:
    """``None`` when the labels can train a method classifier, else why not."""
    from audit.classify.models import MIN_PER_CLASS  # scikit-learn: only where models are trained
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab.method] = counts.get(lab.method, 0) + 1
    known = {m: n for m, n in counts.items() if m != "unknown"}
    if len([n for n in known.values() if n >= MIN_PER_CLASS]) < 2:
        return (f"need at least 2 training methods with {MIN_PER_CLASS} labelled adapters each "
                f"(have {', '.join(f'{m}: {n}' for m, n in sorted(known.items())) or 'none'})")
    return None


def infer(model, X: np.ndarray) -> list[tuple[str, float]]:
    """``(method, probability)`` of the most probable method for each row of ``X`` ``[n, d]``."""
    proba = model.predict_proba(X)
    classes = [str(c) for c in model.classes_]
    best = proba.argmax(axis=1)
    return [(classes[j], float(proba[i, j])) for i, j in enumerate(best)]


def train_method_inference(X: np.ndarray, labels: list[Label]) -> MethodInference:
    """Fit the method classifier on ``X`` ``[n, d]`` (the labels' declared methods) and evaluate it
    leave-one-group-out (see the module docstring).

    Raises:
        ValueError: see :func:`usable_for_methods`.
    """
    from audit.classify.models import method_classifier
    why = usable_for_methods(labels)
    if why:
        raise ValueError(why)
    keep = [i for i, lab in enumerate(labels) if lab.method != "unknown"]
    X, labels = X[keep], [labels[i] for i in keep]
    methods = np.array([lab.method for lab in labels])
    groups = np.array([lab.group for lab in labels])
    held: list[tuple[str, float]] = [("", 0.0)] * len(labels)
    right, right_seen, n_seen = 0, 0, 0
    for g in sorted(set(groups.tolist())):
        test, train = groups == g, groups != g
        seen = set(methods[train].tolist())
        if len(seen) < 2:
            continue  # one method left to learn from: nothing to tell apart
        model = method_classifier().fit(X[train], methods[train])
        for i, (m, p) in zip(np.flatnonzero(test), infer(model, X[test]), strict=True):
            held[i] = (m, p)
            truth = methods[i]
            if truth in seen:
                n_seen += 1
                right_seen += m == truth
                right += m == truth
            else:
                right += p < METHOD_CONFIDENCE  # abstained on a method it never saw
    n = len(labels)
    return MethodInference(model=method_classifier().fit(X, methods), methods=sorted(set(methods.tolist())),
                           n_train=n, held_out=held,
                           metrics={"accuracy_loo": right / n if n else None,
                                    "accuracy_seen": right_seen / n_seen if n_seen else None,
                                    "n_groups": len(set(groups.tolist()))})
