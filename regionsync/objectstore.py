"""The one place an S3 client is built: from a region's object-store part of the settings.

The dialog snapshots and the embedded stack's readiness probe both talk to a region's object
store (SeaweedFS in the embedded default, any S3-compatible store in a deployment); they differ
only in how patient they are.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from regionsync.settings_parts import ObjectStoreSettings


def client(store: ObjectStoreSettings, *, attempts: int = 3, connect_timeout_s: float = 5,
           read_timeout_s: float = 60) -> Any:
    """An S3 client of ``store`` (an empty endpoint: AWS's own for the store's region)."""
    return boto3.client(
        "s3",
        endpoint_url=store.endpoint or None,
        region_name=store.region,
        aws_access_key_id=store.access_key_id.get_secret_value() or None,
        aws_secret_access_key=store.secret_access_key.get_secret_value() or None,
        config=Config(retries={"max_attempts": attempts, "mode": "standard"}, connect_timeout=connect_timeout_s,
                      read_timeout=read_timeout_s),
    )
