import type { RedisClient } from '../../common/redis.ts';
import { REALTIME_ENTITY_TTL_MS, REALTIME_HALF_LIFE_MS } from '../../featurizer/realtime.ts';

/** The feature processor's Lua scripts; its keys are named in common/keyspace.ts. */

export const QUALITY_BUCKET_TTL_MS = 35 * 24 * 60 * 60 * 1000;

/**
 * Applies a client's LabeledExamples of one call, in order, atomically. KEYS[1] seen set,
 * KEYS[2] counts, then the snapshot and entity keys the events name; ARGV = seenTtlMs,
 * entityTtlMs, halfLifeMs, processing time, JSON [{id, ts, label, source, snap, ents}] (key
 * indexes). Returns, per event, the JSON snapshot of its entities' state just BEFORE it was
 * counted. A redelivered event (already in the seen set) changes nothing and gets its stored
 * snapshot back, so the row written to ClickHouse carries the same features as the first time.
 * Decayed counts are kept relative to a per-entity reference time `_t`: an event at `ts` adds
 * 2^((ts - _t)/halfLife); 16 half-lives past `_t` the hash is rebased. Event time (not the clock)
 * makes a replay rebuild the same numbers. One script per client and call (not per event):
 * each entity is read and written once per call, counters, expiries and seen-set pruning are
 * applied once per call.
 */
const APPLY_EXAMPLES = `
local seenTtl, entityTtl, hl, clock = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local events = cjson.decode(ARGV[5])
local out, deltas, cache = {}, {}, {}
local last, applied = 0, 0
local function fmt(x) return string.format('%.17g', x) end
for n, e in ipairs(events) do
  if redis.call('ZADD', KEYS[1], 'NX', clock, e.id) == 0 then
    out[n] = redis.call('GET', KEYS[e.snap]) or false
  else
    applied = applied + 1
    local snaps = {}
    for _, ki in ipairs(e.ents) do
      -- Each entity is read once per call and kept as numbers; every update rounds through the
      -- same 17-digit text a stored value has, so results do not depend on how events are batched.
      local state = cache[ki]
      if state == nil then
        state = {}
        local h = redis.call('HGETALL', KEYS[ki])
        for j = 1, #h, 2 do state[h[j]] = tonumber(h[j + 1]) end
        cache[ki] = state
      end
      local snap = {}
      for k, v in pairs(state) do snap[k] = fmt(v) end
      snaps[#snaps + 1] = snap
      local t = state['_t']
      if t == nil then
        state['_t'] = e.ts
        t = e.ts
      elseif e.ts - t > 16 * hl then
        local f = 2 ^ (-(e.ts - t) / hl)
        for k, v in pairs(state) do
          if k ~= '_t' then state[k] = tonumber(fmt(v * f)) end
        end
        state['_t'] = e.ts
        t = e.ts
      end
      state[e.label] = tonumber(fmt((state[e.label] or 0) + 2 ^ ((e.ts - t) / hl)))
    end
    local snapshot = cjson.encode(snaps)
    redis.call('SET', KEYS[e.snap], snapshot, 'PX', seenTtl)
    out[n] = snapshot
    deltas['examples'] = (deltas['examples'] or 0) + 1
    deltas['label:' .. e.label] = (deltas['label:' .. e.label] or 0) + 1
    deltas['source:' .. e.source] = (deltas['source:' .. e.source] or 0) + 1
    if e.ts > last then last = e.ts end
  end
end
if applied > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', clock - seenTtl))
  redis.call('PEXPIRE', KEYS[1], seenTtl)
  for f, d in pairs(deltas) do redis.call('HINCRBY', KEYS[2], f, d) end
  local cur = tonumber(redis.call('HGET', KEYS[2], 'last_activity_ms') or '0')
  if last > cur then redis.call('HSET', KEYS[2], 'last_activity_ms', string.format('%d', last)) end
  for ki, state in pairs(cache) do
    local args = {}
    for k, v in pairs(state) do
      args[#args + 1] = k
      args[#args + 1] = fmt(v)
    end
    if #args > 0 then
      redis.call('HSET', KEYS[ki], unpack(args))
      redis.call('PEXPIRE', KEYS[ki], entityTtl)
    end
  end
end
return out
`;

/**
 * Applies a client's other events of one call, in order, each once per eventId, atomically.
 * KEYS[1] is the seen set, then the keys the ops name; ARGV = processing time (ms), seenTtlMs,
 * JSON [{id, ops: [[command, keyIndex, ...args]]}]. Commands are chosen by the processor (never
 * from event data). Commutative ones are folded per call: HINCRBY summed per field, MAXFIELD
 * (set a hash field to the max) and PEXPIRE once per key; the rest run in event order.
 */
const APPLY_ONCE = `
local clock, seenTtl = tonumber(ARGV[1]), tonumber(ARGV[2])
local events = cjson.decode(ARGV[3])
local applied = 0
local incr, maxf, expire = {}, {}, {}
for _, e in ipairs(events) do
  if redis.call('ZADD', KEYS[1], 'NX', clock, e.id) == 1 then
    applied = applied + 1
    for _, op in ipairs(e.ops) do
      local cmd, ki = op[1], op[2]
      if cmd == 'HINCRBY' then
        local k = ki .. ':' .. op[3]
        local cur = incr[k]
        if cur == nil then incr[k] = {ki, op[3], op[4]} else cur[3] = cur[3] + op[4] end
      elseif cmd == 'MAXFIELD' then
        local k = ki .. ':' .. op[3]
        local cur = maxf[k]
        if cur == nil or op[4] > cur[3] then maxf[k] = {ki, op[3], op[4]} end
      elseif cmd == 'PEXPIRE' then
        expire[ki] = op[3]
      else
        local args = {}
        for j = 3, #op do args[#args + 1] = tostring(op[j]) end
        redis.call(cmd, KEYS[ki], unpack(args))
      end
    end
  end
end
if applied > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', clock - seenTtl))
  redis.call('PEXPIRE', KEYS[1], seenTtl)
  for _, v in pairs(incr) do redis.call('HINCRBY', KEYS[v[1]], v[2], string.format('%d', v[3])) end
  for _, v in pairs(maxf) do
    local cur = tonumber(redis.call('HGET', KEYS[v[1]], v[2]) or '0')
    if v[3] > cur then redis.call('HSET', KEYS[v[1]], v[2], string.format('%d', v[3])) end
  end
  for ki, ttl in pairs(expire) do redis.call('PEXPIRE', KEYS[ki], string.format('%d', ttl)) end
end
return applied
`;

export type FeatureRedis = RedisClient & {
  eddyApplyExamples(keys: number, ...args: Array<string | number>): Promise<Array<string | null>>;
  eddyApplyOnce(keys: number, ...args: Array<string | number>): Promise<number>;
};

/** Registers the scripts (EVALSHA with automatic fallback to EVAL on NOSCRIPT, by ioredis). */
export function withFeatureScripts(redis: RedisClient): FeatureRedis {
  if (!('eddyApplyExamples' in redis)) {
    redis.defineCommand('eddyApplyExamples', { lua: APPLY_EXAMPLES });
    redis.defineCommand('eddyApplyOnce', { lua: APPLY_ONCE });
  }
  return redis as FeatureRedis;
}

export const FEATURE_DECAY = { halfLifeMs: REALTIME_HALF_LIFE_MS, entityTtlMs: REALTIME_ENTITY_TTL_MS };
