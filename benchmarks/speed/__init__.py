"""Speed benchmarks of kalibr-core (decide latency, outcome throughput, Router overhead)."""
