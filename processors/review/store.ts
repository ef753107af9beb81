import type { RedisClient } from '../../common/redis.ts';

/**
 * The review processor's Lua scripts (keys: common/keyspace.ts `reviewKeys`, the prediction
 * record). Every update of an item is one atomic script, so predictions and feedback of one
 * client, handled concurrently from different partitions, never lose each other's reasons. Every
 * write is idempotent (HSETNX, HSET of the same value, a per-request "counted" flag), so a
 * redelivered event changes nothing. Priorities are computed here, from the reasons stored on
 * the item (models/review.ts documents the rule).
 */

/** Shared: adds reasons to an item (creating it from the prediction record), re-ranks, trims. */
const UPSERT = `
local function priority(item)
  local best, count = 0, 0
  local fields = redis.call('HGETALL', item)
  local n = 1
  for i = 1, #fields, 2 do
    local f = fields[i]
    if string.sub(f, 1, 4) == 'why:' then
      local s = tonumber(fields[i + 1])
      if s > best then best = s end
      count = count + 1
    elseif f == 'n' then
      n = tonumber(fields[i + 1])
    end
  end
  return best + 0.1 * math.max(0, count - 1) + 0.02 * math.min(math.max(0, n - 1), 10)
end

-- rec: the prediction record; reasons: {REASON = score}; extra: field/value list for the item.
local function upsert(rec, queue, closed, item, itemBase, itemId, reasons, extra, now, ttl, maxItems)
  if redis.call('ZSCORE', closed, itemId) then return '' end
  local p = redis.call('HMGET', rec, 'text', 'md', 'l', 'rs', 'v', 'variant', 't', 'rsc')
  if not p[1] then return '' end
  redis.call('HSET', item, 'text', p[1], 'md', p[2] or '{}', 'l', p[3] or '', 's', p[4] or '0', 'v', p[5] or '', 'variant', p[6] or '', 'lt', p[7] or now)
  if p[8] then redis.call('HSET', item, 'scores', p[8]) end
  redis.call('HSETNX', item, 't', p[7] or now)
  if #extra > 0 then redis.call('HSET', item, unpack(extra)) end
  local names = {}
  for reason, score in pairs(reasons) do
    redis.call('HSET', item, 'why:' .. reason, score)
    table.insert(names, reason)
  end
  -- Each request counts once into its text's item (a redelivery or a second reason does not).
  if redis.call('HSETNX', rec, 'rq', 1) == 1 then
    redis.call('HINCRBY', item, 'n', 1)
    redis.call('HSET', item, 'req', ARGV[1])
  end
  redis.call('PEXPIRE', item, ttl)
  redis.call('ZADD', queue, priority(item), itemId)
  redis.call('PEXPIRE', queue, ttl)
  local size = redis.call('ZCARD', queue)
  if size > maxItems then
    for _, dropped in ipairs(redis.call('ZRANGE', queue, 0, size - maxItems - 1)) do
      redis.call('ZREM', queue, dropped)
      redis.call('DEL', itemBase .. dropped)
    end
  end
  table.sort(names)
  return table.concat(names, ',')
end

local function wrong(outcome, correct, label)
  return outcome == 'REJECTED' or (outcome == 'REASSIGNED' and correct ~= label)
end
`;

/**
 * A served (LIVE, CANARY, BASELINE) PredictionMade.
 * KEYS: prediction record, queue, closed, item, waiting.
 * ARGV: requestId, itemId, itemBase, text, md, label, version, variant, occurredAt, topScore,
 *       scores JSON, unsure (0/1), ttl, maxItems, confidentAbove.
 * Returns the reasons it queued (comma-separated, '' for none).
 */
const SERVED = `${UPSERT}
local rec, queue, closed, item, waiting = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local itemId, itemBase, label, now, top, ttl, maxItems, confident = ARGV[2], ARGV[3], ARGV[6], ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
-- The request's fields, the same values the feature processor writes (whoever is first).
redis.call('HSETNX', rec, 'text', ARGV[4])
redis.call('HSETNX', rec, 'md', ARGV[5])
redis.call('HSETNX', rec, 'l', label)
redis.call('HSETNX', rec, 'v', ARGV[7])
redis.call('HSETNX', rec, 'variant', ARGV[8])
redis.call('HSETNX', rec, 't', now)
redis.call('HSET', rec, 'ri', itemId, 'rs', top, 'rsc', ARGV[11])
redis.call('PEXPIRE', rec, ttl)
local reasons, extra, any = {}, {}, false
if ARGV[12] == '1' then reasons.UNSURE = 1 - top; any = true end
local sh = redis.call('HMGET', rec, 'rsh', 'rshv', 'rshs')
if sh[1] and sh[1] ~= label then
  reasons.DISAGREEMENT = 1 + 0.5 * math.min(top, tonumber(sh[3]))
  extra = {'sh', sh[1], 'shv', sh[2], 'shs', sh[3]}
  any = true
end
local w = redis.call('GET', waiting)
if w then
  redis.call('DEL', waiting)
  local f = cjson.decode(w)
  if top >= confident and wrong(f.o, f.c, label) then
    reasons.CONFIDENTLY_WRONG = 1 + top
    table.insert(extra, 'fb'); table.insert(extra, f.o)
    table.insert(extra, 'fbl'); table.insert(extra, f.c or '')
    any = true
  end
end
if not any then return '' end
return upsert(rec, queue, closed, item, itemBase, itemId, reasons, extra, now, ttl, maxItems)
`;

/**
 * A SHADOW PredictionMade (same requestId as the served answer).
 * KEYS: prediction record, queue, closed, item. ARGV: requestId, itemId, itemBase, label,
 * version, topScore, occurredAt, ttl, maxItems.
 */
const SHADOW = `${UPSERT}
local rec, queue, closed, item = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local itemId, itemBase, label, version, top, now, ttl, maxItems = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
redis.call('HSET', rec, 'rsh', label, 'rshv', version, 'rshs', top)
redis.call('PEXPIRE', rec, ttl)
local served = redis.call('HMGET', rec, 'l', 'rs')
-- The served answer not seen yet: it will find this one when it comes.
if not served[2] or served[1] == label then return '' end
local reasons = { DISAGREEMENT = 1 + 0.5 * math.min(top, tonumber(served[2])) }
return upsert(rec, queue, closed, item, itemBase, itemId, reasons, {'sh', label, 'shv', version, 'shs', top}, now, ttl, maxItems)
`;

/**
 * PredictionFeedback. KEYS: prediction record, queue, closed, waiting.
 * ARGV: requestId, itemBase, outcome, correctLabel, occurredAt, ttl, maxItems, confidentAbove.
 * Returns the reasons queued, or 'waiting' when the prediction was not seen yet.
 */
const FEEDBACK = `${UPSERT}
local rec, queue, closed, waiting = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local itemBase, outcome, correct, now, ttl, maxItems, confident = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local p = redis.call('HMGET', rec, 'ri', 'rs', 'l')
if not p[1] or not p[2] then
  redis.call('SET', waiting, cjson.encode({o = outcome, c = correct, t = now}), 'PX', ttl)
  return 'waiting'
end
local top = tonumber(p[2])
if top < confident or not wrong(outcome, correct, p[3]) then return '' end
local itemId = p[1]
return upsert(rec, queue, closed, itemBase .. itemId, itemBase, itemId, { CONFIDENTLY_WRONG = 1 + top }, {'fb', outcome, 'fbl', correct}, now, ttl, maxItems)
`;

export type ReviewRedis = RedisClient & {
  eddyReviewServed(...args: Array<string | number>): Promise<string>;
  eddyReviewShadow(...args: Array<string | number>): Promise<string>;
  eddyReviewFeedback(...args: Array<string | number>): Promise<string>;
};

export function withReviewScripts(redis: RedisClient): ReviewRedis {
  if (!('eddyReviewServed' in redis)) {
    redis.defineCommand('eddyReviewServed', { numberOfKeys: 5, lua: SERVED });
    redis.defineCommand('eddyReviewShadow', { numberOfKeys: 4, lua: SHADOW });
    redis.defineCommand('eddyReviewFeedback', { numberOfKeys: 4, lua: FEEDBACK });
  }
  return redis as ReviewRedis;
}
