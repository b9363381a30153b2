"""`python -m serving`: serve with settings from SITREP_* environment variables (what the containers run)."""

from __future__ import annotations

import sys

from sitrep.models.bundle import BundleError
from sitrep.serving.server import serve
from sitrep.serving.settings import Settings

if __name__ == "__main__":
    try:
        serve(Settings())
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
