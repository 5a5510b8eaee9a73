"""The dual-write transport (`RUNSTREAM_DUAL_WRITE=true`): lists and Streams at once.

Producers write every event to the job's list and to its stream in one Lua script, with
one seq and the same bytes. A job begun by a producer that wrote only one structure (before
dual-write was switched on, or after it was switched off) is first brought level: the script
copies what the side that is behind lacks, in seq order, then appends the new events to both
(see `runstream.migrate.lua`). From its first dual-written event on, a job is therefore
complete in both structures.

Consumers read the structure `RUNSTREAM_BACKEND` names (the list in `reliable` mode, which
keeps history) and find each job where it is: they read the structure holding the job's
newest event, their own one on a tie. A job written only to the other structure (by a
producer of an earlier or later phase, still finishing its jobs) is thus read from there,
and the consumer moves back to its own structure once that one has caught up (copied by
`runstream migrate` or by a dual-write). Where to read is decided when reading starts and
again on every idle read. Moving resumes after the last seq read, and `read` drops any seq
it has already yielded, so no event is lost or seen twice. See docs/migration.md for the
phases this transport is used in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import cast

from redis.asyncio import Redis

from runstream.backends.base import Batch, RedisTransport
from runstream.backends.redis_list import ListTransport
from runstream.backends.redis_streams import StreamsTransport
from runstream.core.keys import JobKeys
from runstream.core.settings import Settings
from runstream.migrate.lua import DUAL_PUBLISH, LAST_SEQS

logger = logging.getLogger(__name__)

_STORED_SEQ = re.compile(rb'^\{"seq":(\d+),')


class MigratingTransport(RedisTransport):
    """Writes both structures; reads `settings.backend`'s, falling back to the other."""

    _kind = "both"

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        super().__init__(settings, redis)
        self.name = f"{settings.backend_name}+dual-write"
        # The base `_write` runs this script: its retries and checks apply to both structures.
        self._publish_script = self.redis.register_script(DUAL_PUBLISH)
        self._last_seqs = self.redis.register_script(LAST_SEQS)
        lists = ListTransport(settings, self.redis)
        self._streams = streams = StreamsTransport(settings, self.redis)
        own, other = (streams, lists) if settings.backend == "streams" else (lists, streams)
        self._own: RedisTransport = own
        self._other: RedisTransport = other

    def _data_key(self, keys: JobKeys) -> str:
        return keys.stream if self.settings.backend == "streams" else keys.list

    async def _batches(self, keys: JobKeys, after: int) -> AsyncIterator[Batch]:
        source = await self._locate(keys, self._own)
        if source is not self._own:
            self._log_source(keys, source, after)
        while True:
            moved = False
            reads = cast(AsyncGenerator[Batch, None], source._batches(keys, after))
            async with aclosing(reads) as batches:
                async for batch in batches:
                    after = max([after, *(_stored_seq(raw) for _, raw in batch)])
                    yield batch
                    if not batch:
                        found = await self._locate(keys, source)
                        moved = found is not source
                        if moved:
                            self._log_source(keys, found, after)
                            source = found
                            break
            if not moved:
                return

    def _log_source(self, keys: JobKeys, source: RedisTransport, after: int) -> None:
        logger.info("job %s: reading from %s after seq %d", keys.job_id, source.name, after)

    async def _locate(self, keys: JobKeys, current: RedisTransport) -> RedisTransport:
        # The structure with the newest event: our own on a tie, where we are if both are empty.
        script_keys = [keys.seq, keys.list, keys.log, keys.stream]
        in_list, in_stream = (int(n) for n in await self._last_seqs(keys=script_keys))
        own, other = (in_stream, in_list) if self._own is self._streams else (in_list, in_stream)
        if own == other == 0:
            return current
        return self._other if other > own else self._own


def _stored_seq(raw: bytes) -> int:
    match = _STORED_SEQ.match(raw)
    return int(match[1]) if match else 0
