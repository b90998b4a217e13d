"""The projection's Lua scripts: atomic writes (``APPLY``), the lookup document
(``RENDER``), daily snapshots (``SNAPSHOT``) and the lookup server's batched reads
(``READ``). Keyspace: :mod:`app.projection.store`.

Pre-rendered documents. After the updates of a batch, :meth:`app.projection.store.Projection.apply`
re-renders the ``GET /clients/{id}`` document of every client they touched (``RENDER``,
once per client), so that a lookup reads one field and renders nothing. Fields:
``<d>:j``, a dimension's members but ``last_month`` (segment, since, previous, rule) as
the API's JSON, written by ``APPLY``; ``metrics_ati``, ``metrics_at`` as RFC 3339; and
``doc`` = ``<docm>|,<d1>,<d2>,|<late>|<now>|<tail>``:

* ``docm``: the latest month (YYYY-MM) in which a dimension changed (max ``<d>:sm``);
* the dimensions in the document (a lookup server without one of them renders the hash);
* ``late``: ``segments`` for lookups in a month after ``docm`` (last month's segment is
  then the current one in every dimension); ``now``: for lookups in ``docm`` itself (last
  month's segment from ``<d>:sm``/``<d>:lm``/``<d>:lmseg``, as :mod:`app.serving.api` computes it);
* ``tail``: ``"metrics":<the summary metrics>,"metrics_at":"<metrics_ati>"``.

Only identifiers (``[a-z][a-z0-9_]*``) and timestamps come before ``tail``, so ``|`` only
separates there. No ``doc`` (a hash written by an older version, before the client's
summary metrics are projected) or a lookup in a month before ``docm``: the lookup reads the
whole hash and renders it (:func:`app.serving.api.client_document`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.projection.history import HISTORY

# Both writers of a client's revenue: set it and move its contribution to the revenue of the
# segment it holds in each dimension.
_SET_REVENUE = """
local function set_revenue(p, ck, r)
  redis.call('HSET', ck, 'revenue', r)
  for _, d in ipairs(redis.call('SMEMBERS', p .. 'dims')) do
    local s = redis.call('HMGET', ck, d, d .. ':rev')
    if s[1] then
      local c = tonumber(s[2]) or 0
      if c ~= r then
        redis.call('HINCRBY', p .. 'rev:' .. d, s[1], r - c)
        redis.call('HSET', ck, d .. ':rev', r)
      end
    end
  end
end
"""

# KEYS[1] NS:gen. ARGV: [1] generation to check ("" none) [2] prefix P [3] client [4] dimension
# [5] to [6] from [7] t (epoch s) [8] month of t [9] month before [10] day of t [11] rule
# [12] event metrics JSON [13] "1" count the transition [14] summary metrics JSON ("" none)
# [15] metrics_at [16] revenue cents ("" none) [17] score of the day [18] t as RFC 3339
# [19] metrics_at as RFC 3339 [20] seconds of membership history kept (LOYALTY_HISTORY_DAYS).
# Returns 1 applied, 0 stale or duplicate, -1 generation switched. An empty dimension updates
# the summary metrics and revenue only (no segment, no counting). A counted change is also
# appended to the membership history (app.projection.history: its own ordering check).
APPLY = _SET_REVENUE + HISTORY + """
if ARGV[1] ~= '' then
  local g = redis.call('GET', KEYS[1]) or '0'
  if g ~= ARGV[1] then return -1 end
end
local p, cid, dim, to, from = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local t = tonumber(ARGV[7])
local ck = p .. 'c:' .. cid
local cur = redis.call('HMGET', ck, dim, dim .. ':v', dim .. ':sm', dim .. ':rev', dim .. ':vk')
local curseg, v = cur[1], tonumber(cur[2])
local pair = from .. '>' .. to
local vk = pair
local ok = dim ~= ''  -- no dimension: a metrics-only update (the clients changelog)
if v then
  if t < v then ok = false
  elseif t == v then
    local seen = '|' .. (cur[5] or '') .. '|'
    ok = from == curseg and to ~= curseg and not string.find(seen, '|' .. pair .. '|', 1, true)
    vk = (cur[5] or '') .. '|' .. pair
  end
end
local applied = 0
if ok then
  -- the client's revenue moves with it; a first segment in a dimension takes the revenue
  -- the clients changelog projected (metrics and revenue have that one source)
  local contrib = tonumber(cur[4]) or tonumber(redis.call('HGET', ck, 'revenue')) or 0
  local cnt, rev = p .. 'cnt:' .. dim, p .. 'rev:' .. dim
  redis.call('SADD', p .. 'dims', dim)
  if curseg then
    redis.call('SREM', p .. 'seg:' .. dim .. ':' .. curseg, cid)
    if redis.call('HINCRBY', cnt, curseg, -1) <= 0 then redis.call('HDEL', cnt, curseg) end
    if contrib ~= 0 then redis.call('HINCRBY', rev, curseg, -contrib) end
    if cur[3] and cur[3] < ARGV[8] then
      redis.call('HSET', ck, dim .. ':lm', ARGV[9], dim .. ':lmseg', curseg)
    end
  end
  redis.call('SADD', p .. 'seg:' .. dim .. ':' .. to, cid)
  redis.call('HINCRBY', cnt, to, 1)
  redis.call('HINCRBY', rev, to, contrib)
  local frag = '"segment":' .. cjson.encode(to) .. ',"since":"' .. ARGV[18]
    .. '","previous":' .. (curseg and cjson.encode(curseg) or 'null')
    .. ',"rule":' .. (ARGV[11] ~= '' and cjson.encode(ARGV[11]) or 'null')
  redis.call('HSET', ck, dim, to, dim .. ':since', t, dim .. ':prev', curseg or '',
             dim .. ':v', t, dim .. ':sm', ARGV[8], dim .. ':rule', ARGV[11],
             dim .. ':m', ARGV[12], dim .. ':rev', contrib, dim .. ':vk', vk, dim .. ':j', frag)
  if ARGV[13] == '1' then
    redis.call('HINCRBY', p .. 'tr:' .. dim .. ':' .. ARGV[10], pair, 1)
    redis.call('ZADD', p .. 'trdays:' .. dim, ARGV[17], ARGV[10])
  end
  applied = 1
end
if ARGV[13] == '1' and dim ~= '' then
  history(p, cid, ck, dim, from, to, t, tonumber(ARGV[20]))
end
if ARGV[14] ~= '' or ARGV[16] ~= '' then
  local nat = tonumber(ARGV[15])
  if nat >= (tonumber(redis.call('HGET', ck, 'metrics_at')) or -1) then
    redis.call('HSET', ck, 'metrics_at', nat, 'metrics_ati', ARGV[19])
    if ARGV[14] ~= '' then redis.call('HSET', ck, 'metrics', ARGV[14]) end
    if ARGV[16] ~= '' then set_revenue(p, ck, tonumber(ARGV[16])) end
  end
end
return applied
"""

# KEYS[1] NS:gen. ARGV: [1] generation to check ("" none) [2] prefix P [3] client [4] summary
# metrics JSON [5] metrics_at (epoch s) [6] metrics_at as RFC 3339 [7] revenue cents ("" none).
# A client's metrics and revenue from the clients changelog, newer or equal versions only;
# moves the revenue per segment; replaces the tail of the rendered ``doc`` in place (only
# identifiers and timestamps come before its fourth ``|``), so no RENDER is needed.
# Returns 1 applied, 0 older, -1 generation switched.
METRICS = _SET_REVENUE + """
if ARGV[1] ~= '' then
  local g = redis.call('GET', KEYS[1]) or '0'
  if g ~= ARGV[1] then return -1 end
end
local p, ck = ARGV[2], ARGV[2] .. 'c:' .. ARGV[3]
local nat = tonumber(ARGV[5])
if nat < (tonumber(redis.call('HGET', ck, 'metrics_at')) or -1) then return 0 end
redis.call('HSET', ck, 'metrics_at', nat, 'metrics_ati', ARGV[6], 'metrics', ARGV[4])
if ARGV[7] ~= '' then set_revenue(p, ck, tonumber(ARGV[7])) end
local doc = redis.call('HGET', ck, 'doc')
if doc then
  local at = 0
  for _ = 1, 4 do
    at = string.find(doc, '|', at + 1, true)
    if not at then break end
  end
  if at then
    redis.call('HSET', ck, 'doc', string.sub(doc, 1, at) .. '"metrics":' .. ARGV[4]
               .. ',"metrics_at":"' .. ARGV[6] .. '"')
  else
    redis.call('HDEL', ck, 'doc')
  end
end
return 1
"""

# ARGV: [1] prefix P [2] client. (Re)renders the client's ``doc`` (none when it cannot).
RENDER = """
local p, ck = ARGV[1], ARGV[1] .. 'c:' .. ARGV[2]
local dims = redis.call('SMEMBERS', p .. 'dims')
table.sort(dims)
local fields = {'metrics', 'metrics_ati'}
for _, d in ipairs(dims) do
  local n = #fields
  fields[n + 1], fields[n + 2], fields[n + 3] = d, d .. ':j', d .. ':sm'
  fields[n + 4], fields[n + 5] = d .. ':lm', d .. ':lmseg'
end
local v = redis.call('HMGET', ck, unpack(fields))
local rows, top = {}, nil
if v[1] and v[2] then
  for i, d in ipairs(dims) do
    local k = 2 + (i - 1) * 5
    if v[k + 1] then
      if not v[k + 2] or not v[k + 3] then top = nil; break end
      rows[#rows + 1] = {d, {v[k + 1], v[k + 2], v[k + 3], v[k + 4], v[k + 5]}}
      if not top or v[k + 3] > top then top = v[k + 3] end
    end
  end
end
if not top then return redis.call('HDEL', ck, 'doc') - 1 end
local y, m = tonumber(string.sub(top, 1, 4)), tonumber(string.sub(top, 6, 7))
if m == 1 then y, m = y - 1, 12 else m = m - 1 end
local before = string.format('%04d-%02d', y, m)
local late, now, names = {}, {}, {}
for i, r in ipairs(rows) do
  local d, f = r[1], r[2]
  local head = cjson.encode(d) .. ':{' .. f[2] .. ',"last_month":'
  local seg = cjson.encode(f[1])
  late[i] = head .. seg .. '}'
  local held = 'null'
  if f[3] <= before then held = seg
  elseif f[4] == before and f[5] and f[5] ~= '' then held = cjson.encode(f[5]) end
  now[i] = head .. held .. '}'
  names[i] = d
end
redis.call('HSET', ck, 'doc', top .. '|,' .. table.concat(names, ',') .. ',|{'
           .. table.concat(late, ',') .. '}|{' .. table.concat(now, ',') .. '}|"metrics":'
           .. v[1] .. ',"metrics_at":"' .. v[2] .. '"')
return 1
"""

SNAPSHOT = """
local p, day, score = ARGV[1], ARGV[2], ARGV[3]
local n = 0
for _, d in ipairs(redis.call('SMEMBERS', p .. 'dims')) do
  local key = p .. 'snap:' .. d .. ':' .. day
  redis.call('DEL', key)
  local cnt = redis.call('HGETALL', p .. 'cnt:' .. d)
  local rev = redis.call('HGETALL', p .. 'rev:' .. d)
  for i = 1, #cnt, 2 do redis.call('HSET', key, 'n:' .. cnt[i], cnt[i + 1]) end
  for i = 1, #rev, 2 do
    if redis.call('HEXISTS', p .. 'cnt:' .. d, rev[i]) == 1 then
      redis.call('HSET', key, 'r:' .. rev[i], rev[i + 1])
    end
  end
  redis.call('ZADD', p .. 'snapdays:' .. d, score, day)
  n = n + 1
end
return n
"""

# KEYS: none (standalone Redis). ARGV[1] namespace; ARGV[2] "<n>," per client: the byte
# length of its id; ARGV[3] the ids back to back (one argument, not one per client: packing
# 400 arguments cost redis-py ~1.7 us per lookup); ARGV[4] the reader's month (YYYY-MM);
# ARGV[5] the reader's dimensions, ",<d1>,<d2>,". Returns the generation, then per client
# its ``doc`` where it serves the reader (not before ``docm``, no other dimensions), else
# its whole hash (empty: unknown client).
READ = """
local ns, lens, blob, month, known = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local gen = redis.call('GET', ns .. ':gen') or '0'
local prefix = ns .. ':' .. gen .. ':c:'
local out = {gen}
local fits = {}
local pos = 1
for n in string.gmatch(lens, '(%d+),') do
  n = tonumber(n)
  local key = prefix .. string.sub(blob, pos, pos + n - 1)
  pos = pos + n
  local doc = redis.call('HGET', key, 'doc')
  if doc and month >= string.sub(doc, 1, 7) then
    local dims = string.sub(doc, 9, string.find(doc, '|', 9, true) - 1)
    local ok = fits[dims]
    if ok == nil then
      ok = true
      for d in string.gmatch(dims, '[^,]+') do
        if not string.find(known, ',' .. d .. ',', 1, true) then ok = false end
      end
      fits[dims] = ok
    end
    if not ok then doc = nil end
  else
    doc = nil
  end
  out[#out + 1] = doc or redis.call('HGETALL', key)
end
return out
"""


def read_args(namespace: str, ids: Sequence[str], month: str,
              dims: Sequence[str]) -> list[str | bytes]:
    """``READ``'s ARGV for these client ids, the reader's month and dimensions."""
    raw = [cid.encode() for cid in ids]
    return [namespace, "".join([f"{len(i)}," for i in raw]), b"".join(raw), month,
            "," + ",".join(dims) + ","]


def read_rows(reply: list[Any]) -> list[bytes | dict[str, str]]:
    """``READ``'s reply (bytes, undecoded): per client its ``doc`` or its hash."""
    return [row if isinstance(row, bytes)
            else {k.decode(): v.decode() for k, v in zip(row[::2], row[1::2], strict=True)}
            for row in reply[1:]]
