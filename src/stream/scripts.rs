//! The server-side steps of a Redis queue, each one atomic Lua script, so
//! that every operation costs one round trip and unique keys hold across
//! every instance. Keys: the stream (`mqueue:{<name>}`), the key index of
//! addmode 1 and 2 (`mqueue:{<name>}:keys`, key -> entry id, undelivered
//! entries only) and the counters (`mqueue:{<name>}:stats`); the hash tag
//! `{<name>}` puts them in one Redis Cluster slot, as a script needs.
//!
//! Every entry leaves the stream exactly once, and is counted there: taken
//! by a consumer that acknowledged it (`fetched`), dropped by `size`
//! (`evicted`), replaced under addmode 2 (`replaced`), by `mqueue.clear`
//! (`cleared`) or moved to the dead letters after `max_deliveries`
//! (`dead`; `mqueue.dead_requeue` adds it again, counted as `added`). So
//! `added = fetched + evicted + replaced + cleared + dead + XLEN`.

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
        redis.pcall('HINCRBY', KEYS[3], 'rejected', 1)
        return 2
      end
      redis.call('XDEL', KEYS[1], old)
      redis.pcall('HINCRBY', KEYS[3], 'replaced', 1)
    end
  end
end
local id = redis.call('XADD', KEYS[1], '*', 'k', ARGV[3], 'v', ARGV[4])
redis.pcall('HINCRBY', KEYS[3], 'added', 1)
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
    redis.pcall('HINCRBY', KEYS[3], 'evicted', #gone)
  end
end
return 1
"#;

/// Acknowledges and deletes the entry this consumer holds (ARGV[3], or
/// '') -- the one its script saw last --, then, unless ARGV[6] is 'ack',
/// delivers the next: first an entry this consumer was delivered but never
/// saw (a call that timed out after Redis ran it; looked for only when
/// ARGV[8] is '1', after a failed call; not counted as a delivery again),
/// then an entry another consumer has held for longer than ARGV[5] ms or
/// handed back at its shutdown (XAUTOCLAIM), else a new one. An entry about to be delivered
/// more than ARGV[7] times (0: no limit) goes to the dead-letter stream
/// KEYS[4] instead. ARGV: group, consumer, held id, addmode, claim ms,
/// 'ack'|'fetch', max deliveries, '1'|'0' (own pending entries possible).
/// Returns {id, key, value}; {id of the newest entry, or '0-0'} when there
/// is none to deliver; false after 'ack'.
pub const FETCH: &str = r#"
if ARGV[3] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  if redis.call('XDEL', KEYS[1], ARGV[3]) == 1 then
    redis.pcall('HINCRBY', KEYS[3], 'fetched', 1)
  end
end
if ARGV[6] == 'ack' then
  return false
end
local max = tonumber(ARGV[7])
local function fields(e)
  local f, key, val = e[2], '', ''
  for i = 1, #f, 2 do
    if f[i] == 'k' then key = f[i + 1] elseif f[i] == 'v' then val = f[i + 1] end
  end
  return key, val
end
-- A delivered entry again: this consumer's own pending one (the held one
-- is acknowledged above), which no script saw, so no new delivery: taken
-- with XCLAIM JUSTID (a new idle time, the same delivery count; one
-- deleted meanwhile is dropped); else one idle past claim_ms (XAUTOCLAIM
-- counts the delivery). Returns the entry and whether it is our own.
local function again()
  for _ = 1, (ARGV[8] == '1' and 16 or 0) do
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
    if not p[1] then break end
    local id = p[1][1]
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    local m = redis.call('XRANGE', KEYS[1], id, id)[1]
    if m then return m, true end
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
  local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[5], '0-0', 'COUNT', 1)
  if claimed[2] and claimed[2][1] and claimed[2][1][2] then
    return claimed[2][1], false
  end
  return nil
end
local e, key, val
for _ = 1, 64 do
  local own
  e, own = again()
  if not e then break end
  key, val = fields(e)
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  if max == 0 or not p[1] or p[1][4] <= max then
    if not own then
      redis.pcall('HINCRBY', KEYS[3], 'redelivered', 1)
    end
    break
  end
  redis.call('XADD', KEYS[4], '*', 'k', key, 'v', val, 'id', e[1], 'deliveries', p[1][4] - 1)
  redis.call('XACK', KEYS[1], ARGV[1], e[1])
  redis.call('XDEL', KEYS[1], e[1])
  redis.pcall('HINCRBY', KEYS[3], 'dead', 1)
  if tonumber(ARGV[4]) ~= 0 and redis.call('HGET', KEYS[2], key) == e[1] then
    redis.call('HDEL', KEYS[2], key)
  end
  e = nil
end
if not e then
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if r and r[1] and r[1][2][1] then
    e = r[1][2][1]
    key, val = fields(e)
  end
end
if not e then
  -- Nothing to deliver: the newest entry's id, after which a waiting
  -- consumer looks for new ones (XREAD BLOCK).
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  return {last[1] and last[1][1] or '0-0'}
end
if tonumber(ARGV[4]) ~= 0 and redis.call('HGET', KEYS[2], key) == e[1] then
  redis.call('HDEL', KEYS[2], key)
end
return {e[1], key, val}
"#;

/// Hands back entry ARGV[3], delivered to this process but not taken (an
/// RPC reply could not hold it): it goes to consumer ARGV[2] (`released`)
/// with idle time ARGV[4], past any claim_ms, so the next fetch of any
/// instance takes it first, and its delivery count goes back to what it
/// was, as no script saw it. ARGV: group, released consumer, id, idle ms.
pub const HAND_BACK: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] then
  return 0
end
local count = math.max(p[1][4] - 1, 0)
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'RETRYCOUNT', count, 'JUSTID')
return 1
"#;

/// Removes consumer ARGV[2] from group ARGV[1] only if it holds nothing,
/// in one step: an entry delivered to it meanwhile keeps it (a separate
/// check and `XGROUP DELCONSUMER` would drop such an entry from the
/// pending list, never to be delivered again). Returns 1 when removed.
pub const DROP_CONSUMER: &str = r#"
if redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])[1] then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"#;

/// Drops every entry (the consumer group stays). Returns how many.
pub const CLEAR: &str = r#"
local n = redis.call('XLEN', KEYS[1])
redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
redis.call('DEL', KEYS[2])
redis.pcall('HINCRBY', KEYS[3], 'cleared', n)
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

/// Puts up to ARGV[1] of the oldest dead letters (KEYS[4]) back on the
/// queue, as new entries (counted as `added`), as an add under addmode
/// ARGV[2] would: indexed by key (1, 2); under addmode 2 it replaces an
/// entry of the same key still queued (counted as `replaced`); under
/// addmode 1 a dead letter whose key is queued again stays a dead letter.
/// Returns how many were put back.
pub const REQUEUE: &str = r#"
local mode = tonumber(ARGV[2])
local dead = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', tonumber(ARGV[1]))
local n = 0
for _, e in ipairs(dead) do
  local f, key, val = e[2], '', ''
  for i = 1, #f, 2 do
    if f[i] == 'k' then key = f[i + 1] elseif f[i] == 'v' then val = f[i + 1] end
  end
  local queued = false
  if mode ~= 0 then
    local old = redis.call('HGET', KEYS[2], key)
    queued = old and #redis.call('XRANGE', KEYS[1], old, old) > 0
    if queued and mode == 2 then
      redis.call('XDEL', KEYS[1], old)
      redis.pcall('HINCRBY', KEYS[3], 'replaced', 1)
      queued = false
    end
  end
  if not queued then
    local id = redis.call('XADD', KEYS[1], '*', 'k', key, 'v', val)
    if mode ~= 0 then
      redis.call('HSET', KEYS[2], key, id)
    end
    redis.call('XDEL', KEYS[4], e[1])
    redis.pcall('HINCRBY', KEYS[3], 'added', 1)
    n = n + 1
  end
end
return n
"#;
