import json
import urllib.error
import urllib.request

import pytest

from mpp.observability import RECORDS_CONSUMED, HealthServer


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("reason", [None, "kafka: no partitions assigned yet"])
def test_health_endpoints(reason: str | None) -> None:
    server = HealthServer("127.0.0.1", 0, lambda: reason).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert _get(base + "/healthz") == (200, '{"status":"ok"}')
        code, body = _get(base + "/readyz")
        if reason is None:
            assert (code, json.loads(body)) == (200, {"status": "ready"})
        else:
            assert code == 503
            assert json.loads(body) == {"status": "not_ready", "reason": reason}
        topic = f"t{server.port}"
        RECORDS_CONSUMED.labels("unit", topic).inc(3)
        code, metrics = _get(base + "/metrics")
        assert code == 200
        assert f'mpp_records_consumed_total{{service="unit",topic="{topic}"}} 3.0' in metrics
        assert _get(base + "/nope")[0] == 404
    finally:
        server.stop()
