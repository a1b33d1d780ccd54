"""The registry: who is served (homes, residents, contacts), by whom (stations, staff) and
through what (devices), loaded from county spreadsheets or the bundled demo county.

Import the submodules directly (``dispatcher.registry.importing``, ``.export``,
``.service``, ``.schemas``, ``.demo_county``) so a process that only needs the schemas
does not pull in openpyxl.
"""
