"""python -m mpp_analytics: run the analytics service until SIGTERM."""

import sys

from mpp.config import get_settings
from mpp.logs import configure_logging, get_logger
from mpp.observability import set_service
from mpp.service import run_worker
from mpp_analytics.service import SERVICE, WarehouseSyncer, worker
from mpp_analytics.web import ReportServer

if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings, SERVICE)
    set_service(SERVICE)
    syncer = WarehouseSyncer(settings)
    reports = ReportServer(settings, syncer)
    serving = True
    try:
        reports.start()
    except RuntimeError as exc:
        # The stream matters more than the report pages: keep consuming, say it loudly.
        get_logger(SERVICE).error(
            "reports_unavailable", error=str(exc), port=settings.analytics.report_port
        )
        serving = False
    if settings.analytics.warehouse_sync_enabled:
        syncer.start()
    try:
        code = run_worker(settings, worker(settings, on_erasure=syncer.request))
    finally:
        if serving:
            reports.stop()
        syncer.stop()
    sys.exit(code)
