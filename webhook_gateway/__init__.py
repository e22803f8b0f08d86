"""Webhook gateway: receives, verifies and normalizes webhooks into Hiphops events."""
