"""Oversight for supervisors: response-time audits, review lists, coverage and device
health, all recomputed from the record (the audit log, stored events and the registry).

``figures``, ``review``, ``coverage`` and ``health`` are pure; ``service`` loads their
inputs with scope applied; ``api`` and ``cli`` show and export the results.
"""
