"""Welfare visits (探访): plans per resident by category, due visits generated per period,
the phone's check-in and form, missed-visit escalation and monthly compliance figures."""
