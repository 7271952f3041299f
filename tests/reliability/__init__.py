"""The reliability and security suite: bad inputs, load, faults, nothing lost (see conftest.py and SECURITY.md)."""

# A prompt holding this makes the suite's service raise inside the diffusion runner (fault_service.py).
FAULT_MARKER = "__moodshift_fault__"
