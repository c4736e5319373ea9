"""Flow control per destination: rate limit, 429 slow-down, circuit breaker, parking, fair share, pause."""
