"""The transport over Redis Streams: XADD to publish, XREAD BLOCK to consume.

Entry IDs are `0-<seq>`, so a consumer resumes from any seq with no lookup, and the ID
of the last entry it received is always where its next XREAD starts: it never reads
from `$`, which would drop whatever arrived between two reads. Reads do not remove
anything, so any number of consumers can read one job, and late ones replay from seq 1.

The length cap is `XADD MAXLEN ~` (https://redis.io/docs/latest/commands/xadd/):
Redis trims whole radix-tree nodes only, so a job keeps at least `max_len` events and
fewer than `max_len` + one node (`stream-node-max-entries`, 100 by default; a node also
closes at `stream-node-max-bytes`, 4 kB). A consumer that falls behind the trim point
gets one `gap` event naming the trimmed seq range, then the oldest event still kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from runstream.backends.base import Batch, RedisTransport
from runstream.core.keys import JobKeys


class StreamsTransport(RedisTransport):
    """Redis Streams backend (`RUNSTREAM_BACKEND=streams`)."""

    name = "streams"
    _kind = "stream"

    def _data_key(self, keys: JobKeys) -> str:
        return keys.stream

    async def _batches(self, keys: JobKeys, after: int) -> AsyncIterator[Batch]:
        last_id: bytes | str = f"0-{after}"
        while True:
            reply: Any = await self.redis.xread(
                {keys.stream: last_id},
                count=self.settings.read_count,
                block=self.settings.block_ms,
            )
            if not reply:
                yield []
                continue

            _, entries = reply[0]
            last_id = entries[-1][0]
            yield [(entry_id.decode(), fields.get(b"e", b"")) for entry_id, fields in entries]
