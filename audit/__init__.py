"""lora-audit: batch auditing of LoRA adapters (delta spectra, behaviour probes, verdicts).

The package is a library: pure computation (``audit.spectra``, ``audit.adapter``) imports nothing
of Ray, Prefect or the Hub; I/O lives at the edges (``audit.registry``, ``audit.store``).
"""

from audit.version import ANALYZER_VERSION, PACKAGE_VERSION

__version__ = PACKAGE_VERSION
__all__ = ["ANALYZER_VERSION", "__version__"]
