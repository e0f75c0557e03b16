"""``python -m mpp_embedder``: run the embedder until SIGTERM."""

import os

# Before torch loads OpenMP: its threads then sleep instead of spinning between batches. When
# the embedder shares a small machine with other services (2 cores here), spinning threads take
# CPU from them and a descheduled thread stalls the others: the streaming path's end-to-end
# throughput was 11% higher with PASSIVE (bench/streaming.py). An operator's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging
import sys

from mpp_embedder.service import main  # after the OpenMP setting, on purpose

code = main()
# main() has committed, closed its clients and flushed its spans. Leave without the
# interpreter's finalization: there, the triton extension torch loads prints some thirty plain
# lines about "leaked" nanobind objects on stderr (every line there is JSON otherwise).
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
