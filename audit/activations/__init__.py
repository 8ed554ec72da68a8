"""What an adapter changes inside the model: its delta activations (``h_adapted − h_base`` on the
same prompts) and how similar the adapted model's representations stay to the base's (CKA)."""
