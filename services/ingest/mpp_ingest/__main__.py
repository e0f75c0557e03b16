"""python -m mpp_ingest: run the ingest service until SIGTERM."""

import sys

from mpp.config import get_settings
from mpp.service import run_worker
from mpp_ingest.service import worker

if __name__ == "__main__":
    settings = get_settings()
    sys.exit(run_worker(settings, worker(settings)))
