"""Feature vectors of adapters, computed from the store (the classifiers' input)."""

from audit.features.spectral import FEATURE_SET, feature_names, spectral_features

__all__ = ["FEATURE_SET", "feature_names", "spectral_features"]
