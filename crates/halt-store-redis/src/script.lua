-- Shared by every operation of the AgentHalt Redis store. ARGV[1] is the key prefix, ARGV[2] the
-- engine's time in microseconds. Each counter, window or record is one hash:
--   k: kind (c counter, s sliding window, m streak, r record), x: expiry (microseconds, engine
--   time), g: generation (unique per creation, so an old reservation never undoes into a new
--   value), t: total (counters, streaks), e: events "at:amount:reservation,..." (windows),
--   m: mark (streaks, as text), cu: until when a window refuses everything (its cooldown; 0:
--   none), v: value (records).
-- Redis TTLs only collect garbage (an hour after the engine-time expiry); expiry itself is
-- judged against the engine's clock, like every other store.
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local SLACK_MS = 3600000

local function parse_events(s)
  local ev = {}
  if s and s ~= '' then
    for at, amount, res in string.gmatch(s, '(%-?%d+):(%-?%d+):(%d+)') do
      ev[#ev + 1] = {tonumber(at), tonumber(amount), res}
    end
  end
  return ev
end

local function format_events(ev)
  local parts = {}
  for i, e in ipairs(ev) do
    parts[i] = string.format('%d:%d:%s', e[1], e[2], e[3])
  end
  return table.concat(parts, ',')
end

local KIND_NAMES = {c = 'counter', s = 'sliding window', m = 'streak', r = 'record'}

-- The live entry at a key, wanted as `want`; an expired one comes back empty, one generation on.
local function load(key, want)
  local h = redis.call('HMGET', key, 'k', 'x', 'g', 't', 'e', 'v', 'm', 'cu')
  if not h[1] then
    return {k = want, x = 0, g = nil, t = 0, ev = {}, live = false}
  end
  local x, g = tonumber(h[2]), tonumber(h[3])
  if not x or not g or not KIND_NAMES[h[1]] then
    error({err = 'CORRUPT ' .. key .. '|'})
  end
  if x <= NOW then
    return {k = want, x = 0, g = nil, t = 0, ev = {}, live = false}
  end
  if h[1] ~= want then
    error({err = 'WRONGKIND ' .. KIND_NAMES[want] .. '|' .. KIND_NAMES[h[1]] .. '|' .. key .. '|'})
  end
  return {k = want, x = x, g = g, t = tonumber(h[4]) or 0, ev = parse_events(h[5]), v = h[6], m = h[7],
          cu = tonumber(h[8]) or 0, live = true}
end

local function prune(e, width)
  local cutoff = NOW - width
  local kept = {}
  for _, ev in ipairs(e.ev) do
    if ev[1] >= cutoff then kept[#kept + 1] = ev end
  end
  e.ev = kept
end

-- An entry's total as read by counter `c` (a run read with another mark is empty).
local function total(e, c)
  local t = 0
  if e.k == 's' then
    for _, ev in ipairs(e.ev) do t = t + ev[2] end
  elseif e.k == 'm' then
    if e.m == c.mk then t = e.t end
  else
    t = e.t
  end
  if t < 0 then t = 0 end
  return t
end

-- Writes an entry; `w` is the window kind (b bucket, i idle, s sliding, m streak) and `p` its
-- parameter.
local function save(key, e, w, p)
  local x
  if w == 'b' then x = p elseif w == 'i' or w == 'm' then x = NOW + p else x = NOW + p + 1 end
  if e.live and e.x > x then x = e.x end
  if e.cu and e.cu > x then x = e.cu end
  if not e.g then e.g = redis.call('INCR', P .. 'gen') end
  if e.k == 's' then
    redis.call('HSET', key, 'k', 's', 'x', string.format('%d', x), 'g', e.g, 'e', format_events(e.ev),
               'cu', string.format('%d', e.cu or 0))
  elseif e.k == 'm' then
    redis.call('HSET', key, 'k', 'm', 'x', string.format('%d', x), 'g', e.g, 't', string.format('%d', e.t), 'm', e.m)
  else
    redis.call('HSET', key, 'k', 'c', 'x', string.format('%d', x), 'g', e.g, 't', string.format('%d', e.t))
  end
  local ttl = math.floor((x - NOW) / 1000) + SLACK_MS
  if ttl < SLACK_MS then ttl = SLACK_MS end
  redis.call('PEXPIRE', key, ttl)
  e.x = x
  e.live = true
end

-- Takes a reservation's amounts back, where the value is still the one it added to.
local function undo(id, parts)
  for part in string.gmatch(parts, '[^\30]+') do
    local raw, amount, gen = string.match(part, '^(.*)\31(%-?%d+)\31(%d+)$')
    if raw then
      local key = P .. 'c:' .. raw
      local h = redis.call('HMGET', key, 'k', 'x', 'g', 't', 'e')
      if h[1] and tonumber(h[2]) and tonumber(h[2]) > NOW and tonumber(h[3]) == tonumber(gen) then
        if h[1] == 'c' or h[1] == 'm' then
          local t = (tonumber(h[4]) or 0) - tonumber(amount)
          if t < 0 then t = 0 end
          redis.call('HSET', key, 't', string.format('%d', t))
        elseif h[1] == 's' then
          local ev = parse_events(h[5])
          for i, e in ipairs(ev) do
            if e[3] == id then
              table.remove(ev, i)
              break
            end
          end
          redis.call('HSET', key, 'e', format_events(ev))
        end
      end
    end
  end
end

-- Releases reservations whose hold has lapsed (a bounded number per call).
local function release_lapsed()
  local ids = redis.call('ZRANGEBYSCORE', P .. 'holds', '-inf', NOW, 'LIMIT', 0, 100)
  for _, id in ipairs(ids) do
    local parts = redis.call('HGET', P .. 'p:' .. id, 'parts')
    if parts then
      undo(id, parts)
      redis.call('DEL', P .. 'p:' .. id)
    end
    redis.call('ZREM', P .. 'holds', id)
  end
end

-- Reads counter i of the request: ARGV from `base` on are key, window kind, parameter, amount,
-- limit, recent width, recent limit and recent cooldown (all '' without a recent limit), and a
-- streak's mark.
local function counter_arg(i, base)
  local b = base + (i - 1) * 9
  return {raw = ARGV[b], key = P .. 'c:' .. ARGV[b], w = ARGV[b + 1], p = tonumber(ARGV[b + 2]),
          a = tonumber(ARGV[b + 3]), l = tonumber(ARGV[b + 4]), rw = tonumber(ARGV[b + 5]),
          rl = tonumber(ARGV[b + 6]), rc = tonumber(ARGV[b + 7]), mk = ARGV[b + 8]}
end

-- The kind of value a counter's window keeps.
local function kind_of(c)
  if c.w == 's' or c.w == 'm' then return c.w end
  return 'c'
end

-- When a window's recent part (the last `c.rw`) refuses `c.a` more: {current, retry}; else nil.
-- Walks the recent events only, newest first.
local function recent_refusal(e, c)
  local cutoff = NOW - c.rw
  local cur, first = 0, #e.ev + 1
  for j = #e.ev, 1, -1 do
    if e.ev[j][1] < cutoff then break end
    cur = cur + e.ev[j][2]
    first = j
  end
  if cur < 0 then cur = 0 end
  if cur + c.a <= c.rl then return nil end
  local retry, t = -1, cur
  for j = first, #e.ev do
    t = t - e.ev[j][2]
    if t + c.a <= c.rl then
      retry = e.ev[j][1] + c.rw + 1
      break
    end
  end
  return {cur, retry}
end

local function add_to(e, c, res, cap)
  if c.w == 'm' and e.m ~= c.mk then
    -- Another mark starts a new run: a new value, with a new generation.
    e.m, e.t, e.g = c.mk, math.max(c.a, 0), nil
  elseif c.w == 's' then
    e.ev[#e.ev + 1] = {NOW, c.a, res}
    while #e.ev > cap do
      local first = table.remove(e.ev, 1)
      e.ev[1][2] = e.ev[1][2] + first[2]
      e.ev[1][3] = '0'
    end
  else
    e.t = e.t + c.a
    if e.t < 0 then e.t = 0 end
  end
end

local OP = ARGV[3]
release_lapsed()

if OP == 'reserve' or OP == 'add_within' then
  -- ARGV: prefix, now, op, hold_until, cap, n, counters...
  -- 'add_within' adds for good at once: no hold, and no reservation on its events.
  local hold, cap, n = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  -- Cooldowns refuse first, then plain limits, then recent limits. The reply to a refusal is
  -- {0, index, current, limit, retry, by} with by 0 for a limit, 1 a recent limit, 2 a cooldown.
  local cs, es, over = {}, {}, nil
  for i = 1, n do
    local c = counter_arg(i, 7)
    local e = load(c.key, kind_of(c))
    if c.w == 's' then prune(e, c.p) end
    if e.live and e.cu and NOW < e.cu then return {0, i - 1, 0, 0, e.cu, 2} end
    local cur = total(e, c)
    if not over and c.l and cur + c.a > c.l then
      local retry = -1
      if c.w == 's' then
        local t = cur
        for _, ev in ipairs(e.ev) do
          t = t - ev[2]
          if t + c.a <= c.l then
            retry = ev[1] + c.p + 1
            break
          end
        end
      elseif c.w == 'b' and e.live then
        retry = e.x
      end
      over = {0, i - 1, cur, c.l, retry, 0}
    end
    cs[i], es[i] = c, e
  end
  if over then return over end
  for i = 1, n do
    local c = cs[i]
    if c.rw then
      local refused = recent_refusal(es[i], c)
      if refused then
        if c.rc and c.rc > 0 then
          -- The one change a refusal makes: the window's cooldown starts.
          es[i].cu = NOW + c.rc
          save(c.key, es[i], c.w, c.p)
        end
        return {0, i - 1, refused[1], c.rl, refused[2], 1}
      end
    end
  end
  local id = redis.call('INCR', P .. 'next_id')
  local held = OP == 'reserve'
  local res = held and tostring(id) or '0'
  local out, parts = {1, id}, {}
  for i = 1, n do
    local c, e = cs[i], es[i]
    if c.a ~= 0 then
      add_to(e, c, res, cap)
      save(c.key, e, c.w, c.p)
      parts[#parts + 1] = c.raw .. '\31' .. string.format('%d', c.a) .. '\31' .. string.format('%d', e.g)
    end
    out[#out + 1] = total(e, c)
  end
  if held then
    redis.call('HSET', P .. 'p:' .. res, 'h', string.format('%d', hold), 'parts', table.concat(parts, '\30'))
    redis.call('ZADD', P .. 'holds', hold, res)
  end
  return out
elseif OP == 'commit' or OP == 'release' then
  local id = ARGV[4]
  local parts = redis.call('HGET', P .. 'p:' .. id, 'parts')
  if not parts then return 0 end
  if OP == 'release' then undo(id, parts) end
  redis.call('DEL', P .. 'p:' .. id)
  redis.call('ZREM', P .. 'holds', id)
  return 1
elseif OP == 'add' then
  -- ARGV: prefix, now, op, cap, n, counters...
  local cap, n = tonumber(ARGV[4]), tonumber(ARGV[5])
  local out = {}
  for i = 1, n do
    local c = counter_arg(i, 6)
    local e = load(c.key, kind_of(c))
    if c.w == 's' then prune(e, c.p) end
    add_to(e, c, '0', cap)
    save(c.key, e, c.w, c.p)
    out[i] = total(e, c)
  end
  return out
elseif OP == 'total' then
  local c = counter_arg(1, 4)
  local e = load(c.key, kind_of(c))
  if c.w == 's' then prune(e, c.p) end
  return total(e, c)
elseif OP == 'get' then
  local e = load(P .. 'c:' .. ARGV[4], 'r')
  if not e.live then return false end
  return e.v
elseif OP == 'swap' or OP == 'put' then
  -- ARGV: prefix, now, op, key, has_expected, expected, has_new, new, expires (or '')
  local key = P .. 'c:' .. ARGV[4]
  local e = load(key, 'r')
  if OP == 'swap' then
    local current = e.live and e.v or nil
    local expected = nil
    if ARGV[5] == '1' then expected = ARGV[6] end
    if current ~= expected then return 0 end
  end
  if ARGV[7] ~= '1' then
    redis.call('DEL', key)
    return 1
  end
  local x = tonumber(ARGV[9])
  redis.call('DEL', key)
  if x then
    redis.call('HSET', key, 'k', 'r', 'x', string.format('%d', x), 'g', 0, 'v', ARGV[8])
    local ttl = math.floor((x - NOW) / 1000) + SLACK_MS
    if ttl < SLACK_MS then ttl = SLACK_MS end
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('HSET', key, 'k', 'r', 'x', '9223372036854775807', 'g', 0, 'v', ARGV[8])
  end
  return 1
end
return redis.error_reply('unknown operation ' .. tostring(OP))
