"""The embedded world behind ``make demo``: generated WA data and a simulated WA API."""
