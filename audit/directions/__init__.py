"""Directional geometry of an adapter's weight update against its base model's refusal direction
(feature set ``directional-v1``): the maths (:mod:`.maths`), the base's per-module references
(:mod:`.references`), the analyzer that measures an adapter (:mod:`.analyzer`) and its store
table (:mod:`.table`)."""
