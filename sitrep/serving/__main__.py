"""`python -m serving`: serve with settings from SITREP_* environment variables (what the containers run)."""

from __future__ import annotations

import sys

from pydantic import ValidationError

from sitrep.models.bundle import BundleError
from sitrep.models.runtime import RuntimeUnavailable
from sitrep.serving.server import ServeError, serve
from sitrep.serving.settings import Settings

if __name__ == "__main__":
    try:
        serve(Settings())
    except ValidationError as exc:
        print("error: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), file=sys.stderr)
        sys.exit(2)
    except (BundleError, RuntimeUnavailable, ServeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
