"""Adapters around real libraries (SAM, SDXL, Ollama) and the builders of the three model profiles."""
