"""python -m mpp_recommender: serve gRPC and HTTP until SIGTERM."""

import sys

from mpp.config import get_settings
from mpp_recommender.service import run

if __name__ == "__main__":
    sys.exit(run(get_settings()))
