"""How a tokenwire log lives in Redis: its keys, its entries and the Lua scripts that
change it atomically.

Per stream ``S`` (the ``{S}`` hash tag keeps them in one Redis Cluster slot):

- ``tw:{S}:l`` a Redis stream, one entry per event; the entry id is ``<seq>-0``, so
  "everything after seq N" is ``XRANGE (N-0 +`` and no seq is ever stored twice;
- ``tw:{S}:m`` a hash: ``epoch``, ``first``, ``last``, ``bytes`` (the byte offset at
  the end of the last event), ``dropped`` (the offset at the end of ``first - 1``),
  ``closed``; the stream registry adds ``model``, ``status``, ``owner``, …;
- ``tw:{S}:r`` a hash: per gateway, the position of its slowest cursor on a tensor
  stream (the byte window);
- ``tw:{S}:v`` a hash: per gateway, how many viewers it has (presence).

Retention is exact in what readers see (``first`` moves by the same rule as the
memory broker's) and approximate in what Redis frees: ``XTRIM MINID ~`` drops
whole macro nodes only, which costs O(1) instead of a trim per event.
"""

from __future__ import annotations

from typing import Any

from tokenwire.errors import TokenwireError
from tokenwire.events import Event, dumps, loads

PREFIX = "tw:"


class BrokerUnavailable(TokenwireError):
    status = 503
    code = "broker_unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(f"the Redis broker is unreachable ({reason}); try again shortly")
        self.reason = reason


def log_key(stream_id: str) -> str:
    return f"{PREFIX}{{{stream_id}}}:l"


def meta_key(stream_id: str) -> str:
    return f"{PREFIX}{{{stream_id}}}:m"


def readers_key(stream_id: str) -> str:
    return f"{PREFIX}{{{stream_id}}}:r"


def viewers_key(stream_id: str) -> str:
    return f"{PREFIX}{{{stream_id}}}:v"


def keys_of(stream_id: str) -> list[str]:
    return [meta_key(stream_id), log_key(stream_id), readers_key(stream_id), viewers_key(stream_id)]


def decode_entry(entry_id: bytes | str, values: dict[Any, Any] | list[Any]) -> tuple[Event, int]:
    """An entry read back: the event (seq from the id) and its byte offset."""
    if isinstance(values, list):  # a script's reply: a flat field/value list
        values = dict(zip(values[::2], values[1::2], strict=True))
    raw_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    seq = int(raw_id.split("-", 1)[0])
    binary = values.get(b"b")
    event = Event(
        values[b"k"].decode(),
        loads(values[b"f"]),
        seq=seq,
        binary=binary if binary else None,
        ts=float(values[b"t"]),
    )
    return event, int(values[b"o"])


# KEYS: meta, log, readers, viewers
# ARGV: epoch, live_ttl_ms, then field/value pairs for the registry
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'first', 1, 'last', 0, 'bytes', 0,
           'dropped', 0, 'closed', 0)
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


def entry_fields(event: Event, *, windowed: bool = False) -> list[Any]:
    """The APPEND arguments of one entry: kind, fields, binary, size, ts, terminal,
    windowed (whether the byte window applies to it)."""
    binary = bytes(event.binary) if event.binary is not None else b""
    return [
        event.kind, dumps(event.fields), binary, event.size, repr(event.ts),
        1 if event.terminal else 0, 1 if windowed else 0,
    ]  # fmt: skip


ENTRY_ARGS = 7

# KEYS: meta, log, readers, viewers
# ARGV: want (the seq the writer expects for the first entry, 0: the next one),
#       max_events, max_bytes, ttl_ms, window_bytes, live_ttl_ms, then ENTRY_ARGS per
#       entry (entry_fields), in seq order.
# Returns {last, how, bytes}: how 1 every entry is in (appended now, or already there: a
# retried append); otherwise the entries up to seq ``last`` are in and the rest are not:
# 0 the byte window is full, 3 an earlier append of this writer is not in yet (try the
# rest again), -2 the log is closed; -1 no such log ({0, -1}). ``bytes`` is the byte
# offset at the end of ``last`` (the ``o`` of its entry).
# One call appends a whole batch: one HMGET and one HSET however many entries, and
# XTRIM only when ``first`` moved.
APPEND = """
local m, l = KEYS[1], KEYS[2]
local meta = redis.call('HMGET', m, 'last', 'first', 'bytes', 'dropped', 'closed')
if not meta[1] then return {0, -1} end
local last, first = tonumber(meta[1]), tonumber(meta[2])
local total, dropped = tonumber(meta[3]), tonumber(meta[4])
local closed = meta[5] == '1'
local want = tonumber(ARGV[1])
local max_events, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
local window = tonumber(ARGV[5])
local old_first, old_last = first, last
local ended = nil
local slowest = nil
local function offset(seq)
  if seq < first then return dropped end
  local e = redis.call('XRANGE', l, seq .. '-0', seq .. '-0')
  return tonumber(e[1][2][2])
end
local function finish(how)
  if last ~= old_last then
    if first ~= old_first then redis.call('XTRIM', l, 'MINID', '~', first .. '-0') end
    redis.call('HSET', m, 'last', last, 'first', first, 'bytes', total, 'dropped', dropped)
    if old_last == 0 then redis.call('PEXPIRE', l, ARGV[6]) end
    if ended then
      redis.call('HSET', m, 'closed', 1, 'status', ended)
      for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
    end
  end
  return {last, how, total}
end
for i = 0, (#ARGV - 6) / 7 - 1 do
  local a = 7 + i * 7
  local seq = last + 1
  if want > 0 then seq = want + i end
  if seq > last then
    if closed then return finish(-2) end
    if seq > last + 1 then return finish(3) end
    if window > 0 and ARGV[a + 6] == '1' then
      if slowest == nil then
        for _, p in ipairs(redis.call('HVALS', KEYS[3])) do
          local v = tonumber(p)
          if slowest == nil or v < slowest then slowest = v end
        end
        slowest = slowest or 0
      end
      if total - offset(math.min(slowest, last)) > window then return finish(0) end
    end
    last = seq
    total = total + tonumber(ARGV[a + 3])
    local fields = {'o', total, 'k', ARGV[a], 'f', ARGV[a + 1], 't', ARGV[a + 4]}
    if ARGV[a + 2] ~= '' then table.insert(fields, 'b'); table.insert(fields, ARGV[a + 2]) end
    redis.call('XADD', l, last .. '-0', unpack(fields))
    if last - first + 1 > max_events then
      local nf = last - max_events + 1
      dropped = offset(nf - 1)
      first = nf
    end
    -- Keep at least the newest event: a terminal event must stay readable.
    while last > first and total - dropped > max_bytes do
      dropped = offset(first)
      first = first + 1
    end
    if ARGV[a + 5] == '1' then
      closed = true
      ended = ARGV[a]
    end
  end
end
return finish(1)
"""

# KEYS: meta, log   ARGV: after, count
# Returns {first, last, closed, entries} or {-1} for no such log; entries is empty
# when ``after + 1`` is older than retention (the caller raises StreamLagged).
HISTORY = """
local meta = redis.call('HMGET', KEYS[1], 'first', 'last', 'closed')
if not meta[1] then return {-1} end
local first, last = tonumber(meta[1]), tonumber(meta[2])
local after = tonumber(ARGV[1])
local entries = {}
if after + 1 >= first and after < last then
  entries = redis.call('XRANGE', KEYS[2], '(' .. after .. '-0', '+', 'COUNT', ARGV[2])
end
return {first, last, tonumber(meta[3]), entries}
"""
