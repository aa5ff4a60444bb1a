"""Test-session setup: the on-disk cache (``gps.cache``) goes to a fresh temporary folder, so
tests neither read nor fill the repository's ``reports/cache``."""

import os
import tempfile

os.environ["GPS_CACHE_DIR"] = tempfile.mkdtemp(prefix="gps-test-cache-")
