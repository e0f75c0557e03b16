"""python -m mpp_recommender: serve gRPC and HTTP until SIGTERM (with several workers, this
process supervises them and loads no server itself)."""

import sys

from mpp.config import get_settings
from mpp_recommender.workers import supervise, worker_count

if __name__ == "__main__":
    settings = get_settings()
    count = worker_count(settings.recommender.workers)
    if count > 1:
        sys.exit(supervise(settings, count))
    from mpp_recommender.service import run

    sys.exit(run(settings))
