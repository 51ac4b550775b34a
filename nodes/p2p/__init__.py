"""Prompt-to-Prompt attention editing (Hertz et al. 2022) for any backbone with cross-attention."""
