"""`python -m pgm.healthcheck`: the container's health check, without curl (the slim image has none).

Exits 0 when this container's PGM answers 200 on /-/healthz, 1 otherwise.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 3.0


def main() -> int:
    """Ask the PGM listening on HTTP_PORT in this container whether it is alive."""
    url = f"http://127.0.0.1:{os.environ.get('HTTP_PORT') or '3000'}/-/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            healthy = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        sys.stderr.write(f"{url}: {exc}\n")
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
