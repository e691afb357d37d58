"""Webhook subscriptions, their delivery and the SSRF guard (admin spec v0.1.25)."""
