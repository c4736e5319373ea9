"""What operators use: event views, the dead-letter tooling, the HTTP API, dashboard and metrics."""
