"""Prefect flows of lora-audit: orchestration only (the work lives in the ``audit`` package)."""
