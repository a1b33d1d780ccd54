"""CareCall dispatcher: the record of truth (registry, stored events) and, on top of it,
calls, routing and escalation. Also hosts the ``carecall`` command line."""
