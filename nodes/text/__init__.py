"""Text encoders: prompts to per-token features, a mask and a pooled vector (the CONDITIONING of text models)."""
