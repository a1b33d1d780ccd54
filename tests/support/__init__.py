"""Test helpers shared across the suite, written once: a hand-driven clock, stored device
events, the small county's building blocks, and a dispatcher + HTTP app to call.

Fixtures that use them are registered in tests/conftest.py (``cheap_argon2``); a test
module's own ``world`` fixture picks the registry it needs from here.
"""
