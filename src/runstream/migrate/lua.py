"""The per-job Lua scripts of a migration. Each runs atomically on one job's keys.

The copy scripts get KEYS = seq, list, log, stream; the publish gets the keys of the base
publish script (`runstream.backends.base`), the log among them. A job's *list side* is its
`log` (events a reliable consumer has moved) followed by its `list` (events not read yet):
together they are its events in seq order. Its *stream side* is the stream, whose entry IDs
are `0-<seq>`.

Copying always appends what one side has past the other side's last seq, in seq order, so a
stream is only ever appended to with increasing IDs, and running a copy twice copies nothing
the second time.
"""

from __future__ import annotations

from runstream.backends.base import BATCH_MARK_SECONDS
from runstream.backends.guards import APPEND_LUA

_JOB_KEYS = """
local seq_key, list, log, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
"""

# The base publish script's keys: seq, list, stream, batch, then the job's other keys.
_PUBLISH_KEYS = """
local seq_key, list, stream = KEYS[1], KEYS[2], KEYS[3]
local log
for i = 5, #KEYS do
  if string.sub(KEYS[i], -5) == '}:log' then log = KEYS[i] end
end
"""

# Shared functions. `SCAN_BACK` bounds how many unreadable entries (garbage written by
# another tool) are skipped at the end of a list while looking for its last seq.
_FUNCTIONS = """
local SCAN_BACK = 16

local function seq_of(entry)
  local seq = entry and string.match(entry, '^{"seq":(%d+),')
  return seq and tonumber(seq) or 0
end

local function list_last()
  for _, key in ipairs({list, log}) do
    local n = redis.call('LLEN', key)
    for i = n - 1, math.max(0, n - SCAN_BACK), -1 do
      local seq = seq_of(redis.call('LINDEX', key, i))
      if seq > 0 then return seq end
    end
  end
  return 0
end

local function stream_last()
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #top == 0 then return 0 end
  return tonumber(string.match(top[1][1], '^%d+%-(%d+)$')) or 0
end

local function keep_ttl(key)
  local ttl = redis.call('PTTL', seq_key)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end

local function list_to_stream(after, cap, dry)
  local copied = 0
  for _, key in ipairs({log, list}) do
    for _, entry in ipairs(redis.call('LRANGE', key, 0, -1)) do
      local seq = seq_of(entry)
      if seq > after then
        if not dry then
          redis.call('XADD', stream, 'MAXLEN', '~', cap, string.format('0-%d', seq), 'e', entry)
        end
        after, copied = seq, copied + 1
      end
    end
  end
  if copied > 0 and not dry then keep_ttl(stream) end
  return copied
end

local function stream_to_list(after, cap, dry)
  local copied = 0
  local start = string.format('0-%d', after + 1)
  for _, item in ipairs(redis.call('XRANGE', stream, start, '+')) do
    local fields = item[2]
    for j = 1, #fields - 1, 2 do
      if fields[j] == 'e' then
        if not dry then redis.call('RPUSH', list, fields[j + 1]) end
        copied = copied + 1
      end
    end
  end
  if copied > 0 and not dry then
    redis.call('LTRIM', list, -cap, -1)
    keep_ttl(list)
  end
  return copied
end
"""

# The base publish script (same KEYS, ARGV and reply: a retried batch is not written twice,
# and -1 says the job's events are gone), except that it first brings the side that is behind
# (a job begun by a single-structure producer) up to the other, then appends the events to
# both sides with one seq and the same bytes.
DUAL_PUBLISH = (
    APPEND_LUA
    + _PUBLISH_KEYS
    + _FUNCTIONS
    + """
local cap, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local batch, expected = ARGV[4], tonumber(ARGV[5])
local mark = redis.call('GET', KEYS[4])
if mark then
  local id, first = string.match(mark, '^(%S+) (%d+)$')
  if id == batch then return tonumber(first) end
end
if expected > 0 and tonumber(redis.call('GET', seq_key) or '0') < expected - 1 then
  return -1
end

local in_list, in_stream = list_last(), stream_last()
if in_list > in_stream then
  list_to_stream(in_stream, cap, false)
elseif in_stream > in_list then
  stream_to_list(in_list, cap, false)
end
local bodies = {}
for i = 6, #ARGV do bodies[#bodies + 1] = ARGV[i] end
local first = append('both', list, stream, cap, bodies)
redis.call('SET', KEYS[4], batch .. ' ' .. first, 'EX', BATCH_MARK_SECONDS)

if ttl > 0 then
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
else
  keep_ttl(list)
  keep_ttl(stream)
end
return first
"""
).replace("BATCH_MARK_SECONDS", str(BATCH_MARK_SECONDS))

COPY_JOB = (
    _JOB_KEYS
    + _FUNCTIONS
    + """
-- ARGV: target ('stream' or 'list'), cap, dry ('1': count, write nothing), prune ('1': then
-- delete the other side, which the target now holds in full).
-- Returns {events copied, list side's last seq, stream side's last seq, keys deleted}.
local target, cap = ARGV[1], tonumber(ARGV[2])
local dry, prune = ARGV[3] == '1', ARGV[4] == '1'
local in_list, in_stream = list_last(), stream_last()
local copied = 0
if target == 'stream' and in_list > in_stream then
  copied = list_to_stream(in_stream, cap, dry)
elseif target == 'list' and in_stream > in_list then
  copied = stream_to_list(in_list, cap, dry)
end

local deleted = 0
if prune and math.max(in_list, in_stream) > 0 then
  local source = {list, log}
  if target == 'list' then source = {stream} end
  deleted = redis.call('EXISTS', unpack(source))
  if not dry and deleted > 0 then redis.call('DEL', unpack(source)) end
end
return {copied, in_list, in_stream, deleted}
"""
)

LAST_SEQS = (
    _JOB_KEYS
    + _FUNCTIONS
    + """
-- Returns {last seq of the list side, last seq of the stream side}.
return {list_last(), stream_last()}
"""
)
