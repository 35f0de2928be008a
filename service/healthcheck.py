"""Container health probe: exit 0 when the service reports ready, 1 otherwise.

Run as ``python -m service.healthcheck`` (the Dockerfile's ``HEALTHCHECK`` and the
compose healthchecks do). It uses only the standard library so that it starts fast and
works even when the service's own imports are broken, and it never follows the app's
settings class: it reads just two environment variables.

- ``SOFTMAX_HEALTHCHECK_URL``: the full URL to probe, if set.
- ``SOFTMAX_PORT`` (default 8000): otherwise ``http://127.0.0.1:PORT/health/ready``.

It prints one line saying why it passed or failed.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

__all__ = ["DEFAULT_PORT", "TIMEOUT_SECONDS", "main", "probe", "ready_url"]

DEFAULT_PORT = 8000
# Docker's own HEALTHCHECK timeout is the outer bound; stay well below it.
TIMEOUT_SECONDS = 3.0


def ready_url(environ: Mapping[str, str]) -> str:
    """The URL to probe, from ``SOFTMAX_HEALTHCHECK_URL`` or ``SOFTMAX_PORT``."""
    explicit = environ.get("SOFTMAX_HEALTHCHECK_URL", "").strip()
    if explicit:
        if not explicit.startswith(("http://", "https://")):
            raise ValueError(f"SOFTMAX_HEALTHCHECK_URL must be an http(s) URL, got {explicit!r}")
        return explicit
    raw_port = environ.get("SOFTMAX_PORT", "").strip() or str(DEFAULT_PORT)
    try:
        port = int(raw_port)
    except ValueError:
        raise ValueError(f"SOFTMAX_PORT must be an integer, got {raw_port!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"SOFTMAX_PORT must be between 1 and 65535, got {port}")
    return f"http://127.0.0.1:{port}/health/ready"


def probe(url: str, timeout: float = TIMEOUT_SECONDS) -> tuple[bool, str]:
    """Request ``url`` once; return (healthy, one-line reason)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as error:
        return False, f"unhealthy: {url} answered HTTP {error.code}"
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error
        return False, f"unhealthy: {url} unreachable ({reason})"
    if status == 200:
        return True, f"healthy: {url} answered HTTP 200"
    return False, f"unhealthy: {url} answered HTTP {status}"


def main() -> int:
    """Probe once and print the reason; 0 when ready, 1 otherwise."""
    try:
        url = ready_url(os.environ)
    except ValueError as error:
        print(f"unhealthy: {error}", file=sys.stderr)
        return 1
    healthy, reason = probe(url)
    print(reason, file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
