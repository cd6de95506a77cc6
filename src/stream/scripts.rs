//! The server-side steps of a Redis queue, each one atomic Lua script, so
//! that every operation costs one round trip and unique keys hold across
//! every instance. Keys: the stream (`mqueue:{<name>}`), the key index of
//! addmode 1 and 2 (`mqueue:{<name>}:keys`, key -> entry id, undelivered
//! entries only) and the counters (`mqueue:{<name>}:stats`); the hash tag
//! `{<name>}` puts them in one Redis Cluster slot, as a script needs.
//!
//! Every entry leaves the stream exactly once, and is counted there: taken
//! by a consumer that acknowledged it (`fetched`), dropped by `size`
//! (`evicted`), replaced under addmode 2 (`replaced`) or by `mqueue.clear`
//! (`cleared`). So `added = fetched + evicted + replaced + cleared + XLEN`.

/// ARGV: addmode, size (0: none), key, value. Returns 1 added, 2 kept (the
/// key is queued already, addmode 1).
pub const ADD: &str = r#"
local mode = tonumber(ARGV[1])
local maxlen = tonumber(ARGV[2])
if mode ~= 0 then
  local old = redis.call('HGET', KEYS[2], ARGV[3])
  if old then
    if #redis.call('XRANGE', KEYS[1], old, old) > 0 then
      if mode == 1 then
        redis.call('HINCRBY', KEYS[3], 'rejected', 1)
        return 2
      end
      redis.call('XDEL', KEYS[1], old)
      redis.call('HINCRBY', KEYS[3], 'replaced', 1)
    end
  end
end
local id = redis.call('XADD', KEYS[1], '*', 'k', ARGV[3], 'v', ARGV[4])
redis.call('HINCRBY', KEYS[3], 'added', 1)
if mode ~= 0 then
  redis.call('HSET', KEYS[2], ARGV[3], id)
end
if maxlen > 0 then
  local over = redis.call('XLEN', KEYS[1]) - maxlen
  if over > 0 then
    local gone = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', over)
    for _, e in ipairs(gone) do
      redis.call('XDEL', KEYS[1], e[1])
      if mode ~= 0 and redis.call('HGET', KEYS[2], e[2][2]) == e[1] then
        redis.call('HDEL', KEYS[2], e[2][2])
      end
    end
    redis.call('HINCRBY', KEYS[3], 'evicted', #gone)
  end
end
return 1
"#;

/// Acknowledges and deletes the entry this consumer holds (ARGV[3], or
/// '') -- the one its script saw last --, then, unless ARGV[6] is 'ack',
/// delivers the next: first an entry this consumer was delivered but never
/// saw (a call that timed out after Redis ran it), then an entry another
/// consumer has held for longer than ARGV[5] ms or handed back at its
/// shutdown (XAUTOCLAIM), else a new one. ARGV: group, consumer, held id,
/// addmode, claim ms, 'ack'|'fetch'. Returns {id, key, value} or false.
pub const FETCH: &str = r#"
if ARGV[3] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  if redis.call('XDEL', KEYS[1], ARGV[3]) == 1 then
    redis.call('HINCRBY', KEYS[3], 'fetched', 1)
  end
end
if ARGV[6] == 'ack' then
  return false
end
local e
-- This consumer's own pending entries (the held one is acknowledged above).
-- An entry deleted meanwhile comes back without fields: dropped.
for _ = 1, 16 do
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '0')
  local m = r and r[1] and r[1][2][1]
  if not m then break end
  if m[2] then e = m break end
  redis.call('XACK', KEYS[1], ARGV[1], m[1])
end
if not e then
  local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[5], '0-0', 'COUNT', 1)
  if claimed[2] and claimed[2][1] and claimed[2][1][2] then
    e = claimed[2][1]
  end
end
if e then
  redis.call('HINCRBY', KEYS[3], 'redelivered', 1)
else
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if r and r[1] and r[1][2][1] then
    e = r[1][2][1]
  end
end
if not e then
  return false
end
local f = e[2]
local key, val = '', ''
for i = 1, #f, 2 do
  if f[i] == 'k' then key = f[i + 1] elseif f[i] == 'v' then val = f[i + 1] end
end
if tonumber(ARGV[4]) ~= 0 and redis.call('HGET', KEYS[2], key) == e[1] then
  redis.call('HDEL', KEYS[2], key)
end
return {e[1], key, val}
"#;

/// Drops every entry (the consumer group stays). Returns how many.
pub const CLEAR: &str = r#"
local n = redis.call('XLEN', KEYS[1])
redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
redis.call('DEL', KEYS[2])
redis.call('HINCRBY', KEYS[3], 'cleared', n)
return n
"#;

/// Moves a queue of the previous release (keys `mqueue:<name>`, KEYS[1..3])
/// to its hash-tagged names (KEYS[4..6]) when the old stream exists and the
/// new one does not. Returns 1 when moved.
pub const MOVE_OLD: &str = r#"
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('TYPE', KEYS[1]).ok ~= 'stream' then
  return 0
end
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 3])
  end
end
return 1
"#;
