"""python -m mpp_graph_writer: run the graph-writer service until SIGTERM."""

import sys

from mpp.config import get_settings
from mpp.service import run_worker
from mpp_graph_writer.service import worker

if __name__ == "__main__":
    settings = get_settings()
    sys.exit(run_worker(settings, worker(settings)))
