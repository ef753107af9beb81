import type { RedisClient } from '../../common/redis.ts';

/**
 * The quality monitor's Lua scripts (its keys are named in common/keyspace.ts). The bucket keys a
 * judgement touches depend on the joined prediction's version, which only the script knows: the
 * script builds them from the client's monitor key base. They share the client's hash tag, so
 * they live in the same Cluster slot (Redis accepts that; strict proxies might not).
 */
/**
 * Shared by both scripts: count one judgement into the day buckets of its version and of '*',
 * and into the day's segment hash under each of the prediction's segments (field prefix
 * `<segment>\x1f`, models/quality.ts).
 */
const JUDGE = `
local function judge(base, label, version, outcome, correct, ts, bucketTtl, segs)
  local day = math.floor(ts / 86400000)
  local targets = {}
  for _, v in ipairs({version, '*'}) do table.insert(targets, {base .. ':q:' .. v .. ':' .. day, ''}) end
  if segs then
    for _, s in ipairs(segs) do table.insert(targets, {base .. ':g:' .. day, s .. '\\31'}) end
  end
  for _, t in ipairs(targets) do
    local k, pre = t[1], t[2]
    redis.call('HINCRBY', k, pre .. 'n', 1)
    redis.call('HINCRBY', k, pre .. 'pred:' .. label, 1)
    if outcome == 'REJECTED' then
      redis.call('HINCRBY', k, pre .. 'rejected', 1)
      redis.call('HINCRBY', k, pre .. 'fp:' .. label, 1)
    else
      local right = label
      if outcome == 'REASSIGNED' then right = correct end
      redis.call('HINCRBY', k, pre .. 'obs:' .. right, 1)
      if right == label then
        redis.call('HINCRBY', k, pre .. 'correct', 1)
        redis.call('HINCRBY', k, pre .. 'tp:' .. label, 1)
      else
        redis.call('HINCRBY', k, pre .. 'fp:' .. label, 1)
        redis.call('HINCRBY', k, pre .. 'fpk:' .. label, 1)
        redis.call('HINCRBY', k, pre .. 'fn:' .. right, 1)
      end
    end
    redis.call('PEXPIRE', k, bucketTtl)
  end
  redis.call('SADD', base .. ':versions', version)
  redis.call('HINCRBY', base .. ':s', 'judged', 1)
end
local function seen(key, id, ts, ttl)
  if redis.call('ZADD', key, 'NX', ts, id) == 0 then return false end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (ts - ttl))
  redis.call('PEXPIRE', key, ttl)
  return true
end
`;

/**
 * PredictionMade. KEYS: seen, prediction record, waiting. ARGV: base, eventId, occurredAt, label,
 * version, ttl, bucketTtl, segments (JSON list). Writes the join's fields (l, v, j, sg) into the one prediction record
 * (common/keyspace.ts; the feature processor writes the request's fields into the same hash).
 * Returns 0 (redelivered), 1 (stored), 2 (stored and joined with waiting feedback).
 */
const APPLY_PREDICTION = `${JUDGE}
local base, id, ts, label, version, ttl, bucketTtl, segs = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
if not seen(KEYS[1], id, ts, ttl) then return 0 end
redis.call('HINCRBY', base .. ':s', 'predictions', 1)
redis.call('HSET', KEYS[2], 'l', label, 'v', version, 'j', 0, 'sg', segs)
redis.call('PEXPIRE', KEYS[2], ttl)
local waiting = redis.call('GET', KEYS[3])
if not waiting then return 1 end
local w = cjson.decode(waiting)
judge(base, label, version, w.o, w.c, tonumber(w.t), bucketTtl, cjson.decode(segs))
redis.call('HSET', KEYS[2], 'j', 1)
redis.call('DEL', KEYS[3])
return 2
`;

/**
 * PredictionFeedback. KEYS: seen, prediction, waiting. ARGV: base, eventId, occurredAt, outcome,
 * correctLabel, ttl, bucketTtl. Returns 0 (redelivered), 1 (waiting for its prediction),
 * 2 (joined and counted), 3 (the prediction was judged already: the first judgement counts).
 */
const APPLY_FEEDBACK = `${JUDGE}
local base, id, ts, outcome, correct, ttl, bucketTtl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
if not seen(KEYS[1], id, ts, ttl) then return 0 end
redis.call('HINCRBY', base .. ':s', 'feedback', 1)
local p = redis.call('HMGET', KEYS[2], 'l', 'v', 'j', 'sg')
if not p[1] then
  redis.call('SET', KEYS[3], cjson.encode({o = outcome, c = correct, t = ts}), 'PX', ttl)
  return 1
end
if p[3] == '1' then return 3 end
local segs = nil
if p[4] then segs = cjson.decode(p[4]) end
judge(base, p[1], p[2], outcome, correct, ts, bucketTtl, segs)
redis.call('HSET', KEYS[2], 'j', 1)
return 2
`;

/**
 * A lifecycle event (models, retrain-requests, alerts topics). KEYS: seen, summary, events.
 * ARGV: eventId, occurredAt, ttl, event JSON, cap, then field/value pairs for the summary.
 * Returns 1 when applied, 0 when redelivered.
 */
const APPLY_LIFECYCLE = `
local id, ts, ttl, json, cap = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
if redis.call('ZADD', KEYS[1], 'NX', ts, id) == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (ts - ttl))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('LPUSH', KEYS[3], json)
redis.call('LTRIM', KEYS[3], 0, cap - 1)
if #ARGV > 5 then redis.call('HSET', KEYS[2], unpack(ARGV, 6)) end
return 1
`;

export type MonitorRedis = RedisClient & {
  eddyMonitorPrediction(...args: Array<string | number>): Promise<number>;
  eddyMonitorFeedback(...args: Array<string | number>): Promise<number>;
  eddyMonitorLifecycle(...args: Array<string | number>): Promise<number>;
};

export function withMonitorScripts(redis: RedisClient): MonitorRedis {
  if (!('eddyMonitorPrediction' in redis)) {
    redis.defineCommand('eddyMonitorPrediction', { numberOfKeys: 3, lua: APPLY_PREDICTION });
    redis.defineCommand('eddyMonitorFeedback', { numberOfKeys: 3, lua: APPLY_FEEDBACK });
    redis.defineCommand('eddyMonitorLifecycle', { numberOfKeys: 3, lua: APPLY_LIFECYCLE });
  }
  return redis as MonitorRedis;
}

