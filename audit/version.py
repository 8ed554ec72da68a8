"""Versions that key stored results.

``ANALYZER_VERSION`` is part of every audit's identity (repo_id, revision, analyzer version): bump
it whenever a change alters what the analyzer writes for the same input, and every adapter is
audited again on the next scan (old rows stay).
"""

ANALYZER_VERSION = "spectra-2"
"""spectra-2: ``inert`` status, ``block`` column, GPT-2 Conv1D modules always transposed."""
PACKAGE_VERSION = "0.1.0"
