"""Disaster drills: compare regions with the source and repair them (reconcile), re-drive a
topic range into a topic or a region (replay)."""
