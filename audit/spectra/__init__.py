"""Delta spectra: exact singular values of LoRA delta weights and their summaries (pure torch/numpy)."""

from audit.spectra.delta import DeltaSpectrum, as_matrix_factors, delta_spectra, delta_spectrum, dense_delta
from audit.spectra.summaries import SpectralSummary, summarize

__all__ = ["DeltaSpectrum", "SpectralSummary", "as_matrix_factors", "delta_spectra", "delta_spectrum",
           "dense_delta", "summarize"]
