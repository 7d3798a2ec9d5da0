"""What the coordinator and the SDK tell operators about themselves: Prometheus metrics,
OpenTelemetry traces (configured from the standard ``OTEL_*`` variables) and JSON logs.
"""
