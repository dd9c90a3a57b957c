"""What the server tells its operators: the access log, structured logs, Prometheus
metrics, OpenTelemetry traces and the dashboard's snapshot. Each is read from what
the other parts already count; none of them changes what a request does."""

from ._access_log import AccessLog, RequestIds
from ._logging import configure_logging
from ._metrics import Metrics
from ._tracing import Tracing

__all__ = ["AccessLog", "Metrics", "RequestIds", "Tracing", "configure_logging"]
