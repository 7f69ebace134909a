"""Prometheus exporter and alert-driven remediation for the WhatsApp Business API client."""

__version__ = "0.1.0"
