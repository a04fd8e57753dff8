"""Response headers that say where a request's time went (like TEI's x-*-time headers)."""

from __future__ import annotations

from clipserve.service.embeddings import RequestTimings


def timing_headers(timings: RequestTimings) -> dict[str, str]:
    return {
        "x-decode-time-ms": f"{timings.decode_s * 1000:.1f}",
        "x-queue-time-ms": f"{timings.queue_s * 1000:.1f}",
        "x-compute-time-ms": f"{timings.compute_s * 1000:.1f}",
    }
