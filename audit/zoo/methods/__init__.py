"""Training methods of the factory, registered by name (importing this package registers them)."""

from audit.zoo.methods import abliteration, dpo, sft, steering  # noqa: F401  (registration)
from audit.zoo.methods.base import TrainContext, Trained, ZooData, get_method, training_method

__all__ = ["TrainContext", "Trained", "ZooData", "get_method", "training_method"]
