"""Full fine-tunes: top-k delta spectra of ``W_ft − W_base`` against a base model found locally."""

from audit.finetune.audit import audit_finetune
from audit.finetune.base_lookup import BASES_ENV, find_local_base

__all__ = ["BASES_ENV", "audit_finetune", "find_local_base"]
