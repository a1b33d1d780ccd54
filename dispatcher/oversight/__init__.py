"""Oversight for supervisors: response-time audits, review lists, coverage and device
health, all recomputed from the record (the audit log, stored events and the registry).

Pure (no I/O): ``figures``, ``targets``, ``review``, ``coverage``, ``health``, ``render``.
Loading with scope applied: ``service`` (stations, scope, call figures, timelines),
``staffing`` (responders, coverage inputs), ``device_facts``; ``targets_file`` reads
config/oversight.yaml. ``reports`` assembles each report as data; ``views`` (HTTP) and
carecall/shell/cli/report.py show and export them (``export`` over carecall/core/tabular.py).
"""
