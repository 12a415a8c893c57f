"""Google Cloud credentials: Application Default Credentials or Robotoff's ``GOOGLE_CREDENTIALS``.

Robotoff's deployment passes a service-account key as ``GOOGLE_CREDENTIALS``: the key's JSON,
base64-encoded. Robotoff writes it to a file under the project directory and points
``GOOGLE_APPLICATION_CREDENTIALS`` at it; here it is decoded in memory and handed to
``service_account.Credentials.from_service_account_info``: the secret never touches the disk.

Error messages never echo the secret, not even a fragment of it: a failed decode says what was
wrong (not base64, not JSON, missing keys) and nothing about the content.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping

import google.auth
from google.auth.credentials import Credentials
from google.auth.exceptions import DefaultCredentialsError
from google.oauth2 import service_account

logger = logging.getLogger(__name__)

GOOGLE_CREDENTIALS_ENV = "GOOGLE_CREDENTIALS"
PROJECT_ENV = "ROBOTOFF_BATCH_GCP_PROJECT"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_REQUIRED_KEYS = ("type", "client_email", "private_key", "token_uri")


class CredentialsError(RuntimeError):
    """No usable credentials; the message never contains any part of the secret."""


def _decode_service_account_info(encoded: str) -> dict[str, object]:
    """Decode the base64 JSON key; every error is re-raised without the input or its cause."""
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CredentialsError(
            f"{GOOGLE_CREDENTIALS_ENV} is not valid base64 (it must be the base64 encoding of "
            "a service-account JSON key)"
        ) from None
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CredentialsError(
            f"{GOOGLE_CREDENTIALS_ENV} decodes from base64 but is not a UTF-8 JSON document"
        ) from None
    if not isinstance(info, dict):
        raise CredentialsError(f"{GOOGLE_CREDENTIALS_ENV} must hold a JSON object")
    missing = [key for key in _REQUIRED_KEYS if not info.get(key)]
    if missing:
        raise CredentialsError(
            f"{GOOGLE_CREDENTIALS_ENV} is not a service-account key: missing keys {missing}"
        )
    if info.get("type") != "service_account":
        raise CredentialsError(f"{GOOGLE_CREDENTIALS_ENV} must be a key of type 'service_account'")
    return info


def load_credentials(
    *, env: Mapping[str, str] = os.environ
) -> tuple[Credentials | None, str | None]:
    """The credentials and project id to talk to Google Cloud with.

    ``GOOGLE_CREDENTIALS`` (base64 service-account JSON) wins when set; otherwise Application
    Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's login, the metadata
    server). The project is ``ROBOTOFF_BATCH_GCP_PROJECT`` when set, else the key's or ADC's.
    """
    project_override = env.get(PROJECT_ENV) or None
    encoded = env.get(GOOGLE_CREDENTIALS_ENV)
    if encoded:
        info = _decode_service_account_info(encoded)
        try:
            credentials = service_account.Credentials.from_service_account_info(
                info, scopes=[CLOUD_PLATFORM_SCOPE]
            )
        except (ValueError, KeyError, TypeError):
            # The library's message may quote the key material: never pass it on.
            raise CredentialsError(
                f"{GOOGLE_CREDENTIALS_ENV} holds a service-account key that cannot be loaded "
                "(malformed private key?)"
            ) from None
        project = project_override or _str_or_none(info.get("project_id"))
        logger.info(
            "Using the service account %s from %s",
            credentials.service_account_email,
            GOOGLE_CREDENTIALS_ENV,
        )
        return credentials, project
    try:
        adc, adc_project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except DefaultCredentialsError as exc:
        raise CredentialsError(
            "no Google Cloud credentials: set GOOGLE_CREDENTIALS (base64 service-account key) "
            f"or Application Default Credentials ({exc})"
        ) from None
    logger.info("Using Application Default Credentials")
    return adc, project_override or adc_project


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
