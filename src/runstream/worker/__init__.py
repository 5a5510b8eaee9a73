"""The worker: takes jobs from the job queue, runs their graphs, publishes their events.

`runstream.worker.queue` imports no LangGraph code, so the API can use the queue
without loading the graph runtime.
"""

from runstream.worker.queue import JobQueue, JobStatus, QueuedJob

__all__ = ["JobQueue", "JobStatus", "QueuedJob"]
