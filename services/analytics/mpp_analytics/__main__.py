"""python -m mpp_analytics: run the analytics service until SIGTERM."""

import sys

from mpp.config import get_settings
from mpp.service import run_worker
from mpp_analytics.service import WarehouseSyncer, worker
from mpp_analytics.web import ReportServer

if __name__ == "__main__":
    settings = get_settings()
    syncer = WarehouseSyncer(settings)
    reports = ReportServer(settings, syncer)
    if settings.analytics.warehouse_sync_enabled:
        syncer.start()
    reports.start()
    try:
        code = run_worker(settings, worker(settings, on_erasure=syncer.request))
    finally:
        reports.stop()
        syncer.stop()
    sys.exit(code)
