"""`runstream bench`: latency, throughput and cost of every backend, against the Redis floor."""
