"""The fault suite: one real exporter per fault, the fault injected through a test-controlled
proxy, stand-in or filesystem, and the same five checks each time — /metrics keeps answering
quickly, the right metric says what is wrong, the audit log loses nothing, no action runs
twice, and everything recovers without a restart."""
