"""Moving a deployment between the list and Streams backends under live traffic.

See docs/migration.md for the runbook. `lua` holds the per-job Redis scripts (dual-write
publish, copy, prune), `copy` the `runstream migrate` scan, and `compat` the checks that
catch an API reading a structure its workers do not write.
"""
