#!lua name=gq_v1
--
-- gq_v1: the job-queue protocol of judged as one Redis Functions library (Redis >= 7.0).
--
-- Every state change of a job, a sweep or a schedule is one FCALL of a function below. Each
-- function validates its arguments and the current state before its first write (Redis does not
-- roll a function back), touches only keys of one queue family (one hash tag), and runs in
-- bounded time. docs/PROTOCOL.md documents the keys, the payloads and every call.
--
-- Calling convention: KEYS[1] = <P>seq (the routing key of the family), ARGV[1] = <P>, the key
-- prefix of the family, e.g. "gq:{judge}:". Replies are flat arrays of strings (RESP2 friendly);
-- the first element is a status word ("ok", "dup", "lost", ...). Bad arguments raise an error
-- whose message starts with "ERR gq: ".

local VERSION = '1'
local MAX_PAYLOAD = 64 * 1024 * 1024 -- bytes; clients enforce their own, smaller limit
local MAX_PRIO = 1000
local PRIO_SPAN = 4294967296 -- 2^32: ready score = (MAX_PRIO - prio) * 2^32 + seq
local EVENTS_MAXLEN = 100000
local DONE_TTL_S = 7 * 24 * 3600 -- finished job hashes expire after a week (dead ones never)
local PROMOTE_LIMIT = 100 -- delayed jobs promoted per claim
local CLAIM_SCAN_LIMIT = 1000 -- stale ready entries dropped per claim
local SWEEP_CANCEL_EAGER = 20000 -- shards gq_sweep_cancel cancels at once
local RETENTION_MAX_MS = 3650 * 86400000 -- a sweep's retention: at most ten years
local SWEEP_SUFFIXES = { '', ':res', ':err', ':term', ':labels' } -- the keys of a sweep
local RETAIN_SCAN_MAX = 100000 -- :err entries visited for a sweep's dead jobs
local PURGE_JOBS_MAX = 20000 -- shard job hashes gq_sweep_purge deletes at once

local function fail(msg)
  return redis.error_reply('ERR gq: ' .. msg)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integer argument check: returns the number or nil.
local function int_arg(s, lo, hi)
  if type(s) ~= 'string' or not string.match(s, '^%-?%d+$') then
    return nil
  end
  local v = tonumber(s)
  if v == nil or v < lo or v > hi then
    return nil
  end
  return v
end

local function id_ok(s)
  return type(s) == 'string' and #s >= 1 and #s <= 200 and not string.find(s, '[%s%c]')
end

local function prefix_ok(p)
  return type(p) == 'string' and #p >= 3 and #p <= 100 and string.sub(p, -1) == ':'
end

local function emit(P, now, ev, jid, ...)
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'ev', ev, 'jid', jid,
             'ms', tostring(now), ...)
end

local function ready_key(P, queue)
  return P .. 'q:' .. queue .. ':ready'
end

local function job_key(P, jid)
  return P .. 'job:' .. jid
end

local function sweep_key(P, sid)
  return P .. 'sweep:' .. sid
end

local function hget_num(key, field)
  return tonumber(redis.call('HGET', key, field) or '0') or 0
end

local function ready_score(prio, seq)
  return (MAX_PRIO - prio) * PRIO_SPAN + seq
end

-- Removes a job from every index that holds it while it is not terminal.
local function unindex(P, jid, queue)
  redis.call('ZREM', ready_key(P, queue), jid)
  redis.call('ZREM', P .. 'delayed', jid)
  redis.call('ZREM', P .. 'leases', jid)
  redis.call('ZREM', P .. 'budgets', jid)
end

-- The dead jobs of a sweep: shards whose outcome is 'dead: ...' in :err (at most RETAIN_SCAN_MAX
-- entries visited) and a dead aggregate job.
local function sweep_dead_jobs(P, sid)
  local sk = sweep_key(P, sid)
  local out = {}
  local cursor, seen = '0', 0
  repeat
    local r = redis.call('HSCAN', sk .. ':err', cursor, 'COUNT', 1000)
    cursor = r[1]
    for i = 1, #r[2], 2 do
      local jid = sid .. ':' .. r[2][i]
      if string.sub(r[2][i + 1], 1, 6) == 'dead: ' and
          redis.call('HGET', job_key(P, jid), 'state') == 'dead' then
        table.insert(out, jid)
      end
    end
    seen = seen + #r[2] / 2
  until cursor == '0' or seen >= RETAIN_SCAN_MAX
  local ajid = redis.call('HGET', sk, 'agg_job')
  if ajid and ajid ~= '' and redis.call('HGET', job_key(P, ajid), 'state') == 'dead' then
    table.insert(out, ajid)
  end
  return out
end

-- A sweep reached a final state (done, or cancelled with every shard terminal). With a retention,
-- every key of the sweep and its dead jobs expire `retention_ms` from now; the `expiring` zset
-- lets gq_reap drop them from the `sweeps` and `dead` zsets once they are gone.
local function sweep_final(P, sid, now)
  local sk = sweep_key(P, sid)
  local s = redis.call('HMGET', sk, 'retention_ms', 'expires_ms')
  local keep = tonumber(s[1] or '0') or 0
  if keep <= 0 or s[2] then
    return
  end
  local at = now + keep
  redis.call('HSET', sk, 'expires_ms', at)
  for _, suffix in ipairs(SWEEP_SUFFIXES) do
    redis.call('PEXPIREAT', sk .. suffix, at)
  end
  redis.call('ZADD', P .. 'expiring', at, sid)
  for _, jid in ipairs(sweep_dead_jobs(P, sid)) do
    redis.call('PEXPIREAT', job_key(P, jid), at)
    redis.call('ZADD', P .. 'expiring', at, jid)
  end
  emit(P, now, 'sweep_expiring', sid, 'expires_ms', at)
end

-- Undoes sweep_final: the sweep runs again (gq_dlq_retry reopened it).
local function sweep_persist(P, sid)
  local sk = sweep_key(P, sid)
  if not redis.call('HGET', sk, 'expires_ms') then
    return
  end
  redis.call('HDEL', sk, 'expires_ms')
  for _, suffix in ipairs(SWEEP_SUFFIXES) do
    redis.call('PERSIST', sk .. suffix)
  end
  redis.call('ZREM', P .. 'expiring', sid)
  for _, jid in ipairs(sweep_dead_jobs(P, sid)) do
    redis.call('PERSIST', job_key(P, jid))
    redis.call('ZREM', P .. 'expiring', jid)
  end
end

-- Whether a sweep is final: done, or cancelled with every shard terminal (an outcome, or never
-- enqueued: `unsent`).
local function sweep_is_final(s_state, expected, ok, failed, unsent)
  if s_state == 'done' then
    return true
  end
  return s_state == 'cancelled' and
      (tonumber(ok) or 0) + (tonumber(failed) or 0) + (tonumber(unsent) or 0) >=
      (tonumber(expected) or 0)
end

-- A cancelled sweep becomes final when its last shard stops.
local function sweep_check_final(P, sid, now)
  local s = redis.call('HMGET', sweep_key(P, sid), 'state', 'expected', 'ok', 'failed', 'unsent')
  if s[1] == 'cancelled' and sweep_is_final(s[1], s[2], s[3], s[4], s[5]) then
    sweep_final(P, sid, now)
  end
end

-- Sweep fan-in: fires once, on the single transition sealed -> aggregating (or done when the
-- sweep has no aggregate queue), when every shard has a terminal outcome.
local function maybe_fanin(P, sid, now)
  local sk = sweep_key(P, sid)
  local s = redis.call('HMGET', sk, 'state', 'expected', 'ok', 'failed', 'agg_queue', 'agg_prio',
                       'round')
  if s[1] ~= 'sealed' then
    return 'pending'
  end
  local expected, ok, failed = tonumber(s[2]), tonumber(s[3]), tonumber(s[4])
  if ok + failed < expected then
    return 'pending'
  end
  if s[5] == nil or s[5] == '' then
    redis.call('HSET', sk, 'state', 'done', 'finished_ms', now)
    emit(P, now, 'sweep_done', sid)
    sweep_final(P, sid, now)
    return 'fanin'
  end
  local round = tonumber(s[7] or '0') + 1
  local ajid = 'agg:' .. sid .. ':' .. round
  redis.call('HSET', sk, 'state', 'aggregating', 'round', round, 'agg_job', ajid)
  if redis.call('EXISTS', job_key(P, ajid)) == 0 then
    local prio = tonumber(s[6]) or 0
    local seq = redis.call('INCR', P .. 'seq')
    redis.call('HSET', job_key(P, ajid), 'state', 'queued', 'queue', s[5], 'prio', prio, 'seq',
               seq, 'payload', cjson.encode({ kind = 'aggregate', sweep = sid }), 'attempts', 0,
               'max_attempts', 5, 'stalls', 0, 'interrupts', 0, 'run_budget_ms', 0, 'sweep', '',
               'shard', '', 'agg_of', sid, 'created_ms', now)
    redis.call('ZADD', ready_key(P, s[5]), ready_score(prio, seq), ajid)
    redis.call('SADD', P .. 'queues', s[5])
    emit(P, now, 'enqueued', ajid, 'queue', s[5])
  end
  emit(P, now, 'sweep_ready', sid, 'agg', ajid)
  return 'fanin'
end

-- Records the terminal outcome of shard `shard` of sweep `sid`: the first outcome wins.
-- `ok_result` is the result for a success, nil for a failure described by `err`.
-- Returns true when this call set the outcome. A sweep that no longer exists (purged, or its
-- retention ran out) records nothing.
local function shard_terminal(P, sid, shard, ok_result, err, now)
  local sk = sweep_key(P, sid)
  if redis.call('EXISTS', sk) == 0 then
    return false
  end
  if redis.call('SETBIT', sk .. ':term', shard, 1) == 1 then
    return false
  end
  if ok_result ~= nil then
    redis.call('HSET', sk .. ':res', shard, ok_result)
    redis.call('HINCRBY', sk, 'ok', 1)
  else
    redis.call('HSET', sk .. ':err', shard, err)
    redis.call('HINCRBY', sk, 'failed', 1)
  end
  maybe_fanin(P, sid, now)
  sweep_check_final(P, sid, now)
  return true
end

-- Moves a job to a terminal failure state ('dead' or 'cancelled') with a reason.
local function finish_failed(P, jid, job, state, reason, now)
  unindex(P, jid, job.queue)
  redis.call('HSET', job_key(P, jid), 'state', state, 'error', reason, 'finished_ms', now,
             'token', '')
  if job.token ~= nil and job.token ~= '' then
    redis.call('DEL', P .. 'tok:' .. job.token)
  end
  if state == 'dead' then
    redis.call('ZADD', P .. 'dead', now, jid)
  else
    redis.call('EXPIRE', job_key(P, jid), DONE_TTL_S)
  end
  if job.sweep ~= nil and job.sweep ~= '' then
    shard_terminal(P, job.sweep, tonumber(job.shard), nil, state .. ': ' .. reason, now)
  elseif job.agg_of ~= nil and job.agg_of ~= '' then
    -- a sweep whose aggregate cannot run ends without one (gq_dlq_retry runs it again)
    local sk = sweep_key(P, job.agg_of)
    if redis.call('HGET', sk, 'agg_job') == jid and
        redis.call('HGET', sk, 'state') == 'aggregating' then
      redis.call('HSET', sk, 'state', 'done', 'agg_error', state .. ': ' .. reason,
                 'finished_ms', now)
      emit(P, now, 'sweep_done', job.agg_of, 'agg_error', reason)
      sweep_final(P, job.agg_of, now)
    end
  end
  emit(P, now, state, jid, 'reason', reason)
end

local JOB_FIELDS = { 'state', 'queue', 'prio', 'seq', 'token', 'attempts', 'max_attempts',
                     'stalls', 'interrupts', 'sweep', 'shard', 'cancel', 'commit_token',
                     'run_budget_ms', 'agg_of' }

local function load_job(P, jid)
  local v = redis.call('HMGET', job_key(P, jid), unpack(JOB_FIELDS))
  if v[1] == false or v[1] == nil then
    return nil
  end
  local job = {}
  for i, f in ipairs(JOB_FIELDS) do
    if v[i] ~= false then
      job[f] = v[i]
    end
  end
  return job
end

-- The cancel word a running job should see: '1' (job), 'timeout' (run budget), 'sweep' (its
-- sweep was cancelled, or no longer exists).
local function cancel_word(P, job)
  if job.cancel ~= nil and job.cancel ~= '' then
    return job.cancel
  end
  if job.sweep ~= nil and job.sweep ~= '' then
    local st = redis.call('HGET', sweep_key(P, job.sweep), 'state')
    if st == 'cancelled' or st == false then
      return 'sweep'
    end
  end
  return ''
end

-- A running job whose token matches, or nil.
local function owned_job(P, jid, token)
  local job = load_job(P, jid)
  if job == nil or job.state ~= 'running' or job.token ~= token then
    return nil
  end
  return job
end

local function check_common(keys, args, n)
  if not prefix_ok(args[1]) or keys[1] ~= args[1] .. 'seq' then
    return 'KEYS[1] must be <prefix>seq and ARGV[1] the prefix ending in ":"'
  end
  if #args < n then
    return 'expected at least ' .. (n - 1) .. ' arguments after the prefix'
  end
  return nil
end

---------------------------------------------------------------------------------------------
-- gq_enqueue P jid queue prio delay_ms max_attempts run_budget_ms payload sweep shard
local function gq_enqueue(keys, args)
  local e = check_common(keys, args, 10)
  if e then return fail(e) end
  local P, jid, queue = args[1], args[2], args[3]
  local prio = int_arg(args[4], 0, MAX_PRIO)
  local delay = int_arg(args[5], 0, 365 * 86400000)
  local max_attempts = int_arg(args[6], 1, 1000)
  local budget = int_arg(args[7], 0, 365 * 86400000)
  local payload, sid = args[8], args[9]
  if not id_ok(jid) then return fail('jid: 1-200 bytes without spaces or control characters') end
  if not id_ok(queue) then return fail('queue: 1-200 bytes without spaces') end
  if prio == nil then return fail('prio: an integer 0..' .. MAX_PRIO) end
  if delay == nil then return fail('delay_ms: a non-negative integer') end
  if max_attempts == nil then return fail('max_attempts: an integer 1..1000') end
  if budget == nil then return fail('run_budget_ms: a non-negative integer') end
  if #payload > MAX_PAYLOAD then return fail('payload: larger than ' .. MAX_PAYLOAD .. ' bytes') end
  local shard = ''
  if sid ~= '' then
    local sh = int_arg(args[10], 0, 100000000)
    if sh == nil then return fail('shard: an integer 0..1e8 for a sweep job') end
    shard = sh
  end
  local jk = job_key(P, jid)
  if redis.call('EXISTS', jk) == 1 then
    return { 'dup', redis.call('HGET', jk, 'state') }
  end
  if sid ~= '' then
    local ss = redis.call('HMGET', sweep_key(P, sid), 'state', 'expected')
    if ss[1] == false then return fail('sweep ' .. sid .. ' does not exist') end
    if shard >= tonumber(ss[2]) then return fail('shard: beyond the sweep\'s expected count') end
    if ss[1] ~= 'open' then return { 'closed', ss[1] } end
  end
  local now = now_ms()
  local seq = redis.call('INCR', P .. 'seq')
  local state = delay > 0 and 'delayed' or 'queued'
  redis.call('HSET', jk, 'state', state, 'queue', queue, 'prio', prio, 'seq', seq, 'payload',
             payload, 'attempts', 0, 'max_attempts', max_attempts, 'stalls', 0, 'interrupts', 0,
             'run_budget_ms', budget, 'sweep', sid, 'shard', shard, 'created_ms', now)
  if delay > 0 then
    redis.call('ZADD', P .. 'delayed', now + delay, jid)
  else
    redis.call('ZADD', ready_key(P, queue), ready_score(prio, seq), jid)
  end
  redis.call('SADD', P .. 'queues', queue)
  emit(P, now, 'enqueued', jid, 'queue', queue)
  return { 'ok', state }
end

-- gq_sweep_create P sid expected agg_queue agg_prio meta [labels [retention_ms]]
-- labels (optional): the content of a labels file, kept at <P>sweep:<sid>:labels for metrics.
-- retention_ms (optional, 0 = keep forever): how long the sweep's keys live once it is final.
local function gq_sweep_create(keys, args)
  local e = check_common(keys, args, 6)
  if e then return fail(e) end
  local P, sid = args[1], args[2]
  local expected = int_arg(args[3], 1, 100000000)
  local agg_prio = int_arg(args[5], 0, MAX_PRIO)
  if not id_ok(sid) or string.find(sid, ':', 1, true) then
    return fail('sid: 1-200 bytes without spaces or ":"')
  end
  if expected == nil then return fail('expected: an integer 1..1e8') end
  if args[4] ~= '' and not id_ok(args[4]) then return fail('agg_queue: bad queue name') end
  if agg_prio == nil then return fail('agg_prio: an integer 0..' .. MAX_PRIO) end
  if args[7] ~= nil and #args[7] > MAX_PAYLOAD then
    return fail('labels: larger than ' .. MAX_PAYLOAD .. ' bytes')
  end
  local keep = 0
  if args[8] ~= nil then
    keep = int_arg(args[8], 0, RETENTION_MAX_MS)
    if keep == nil then
      return fail('retention_ms: an integer 0..' .. RETENTION_MAX_MS .. ' (0: keep forever)')
    end
  end
  local sk = sweep_key(P, sid)
  if redis.call('EXISTS', sk) == 1 then
    return { 'dup', redis.call('HGET', sk, 'state') }
  end
  local now = now_ms()
  redis.call('HSET', sk, 'state', 'open', 'expected', expected, 'ok', 0, 'failed', 0,
             'agg_queue', args[4], 'agg_prio', agg_prio, 'meta', args[6] or '', 'created_ms', now,
             'round', 0, 'retention_ms', keep)
  if args[7] ~= nil and args[7] ~= '' then
    redis.call('SET', sk .. ':labels', args[7])
  end
  redis.call('ZADD', P .. 'sweeps', now, sid)
  emit(P, now, 'sweep_created', sid, 'expected', expected)
  return { 'ok', 'open' }
end

-- gq_sweep_seal P sid
local function gq_sweep_seal(keys, args)
  local e = check_common(keys, args, 2)
  if e then return fail(e) end
  local P, sid = args[1], args[2]
  local sk = sweep_key(P, sid)
  local st = redis.call('HGET', sk, 'state')
  if st == false then return fail('sweep ' .. sid .. ' does not exist') end
  if st ~= 'open' then return { 'dup', st } end
  local now = now_ms()
  redis.call('HSET', sk, 'state', 'sealed', 'sealed_ms', now)
  emit(P, now, 'sweep_sealed', sid)
  return { 'ok', maybe_fanin(P, sid, now) }
end

-- gq_claim P wid token lease_ms q1 [q2 ...]
-- Returns {} when nothing is ready, else {jid, payload, attempts, checkpoint, queue, sweep,
-- shard}.
local function gq_claim(keys, args)
  local e = check_common(keys, args, 5)
  if e then return fail(e) end
  local P, wid, token = args[1], args[2], args[3]
  local lease = int_arg(args[4], 100, 86400000)
  if not id_ok(wid) then return fail('wid: bad worker id') end
  if type(token) ~= 'string' or not string.match(token, '^[0-9a-f]+$') or #token < 32 then
    return fail('token: at least 32 lower-case hex digits')
  end
  if lease == nil then return fail('lease_ms: an integer 100..86400000') end
  if redis.call('EXISTS', P .. 'tok:' .. token) == 1 then
    return fail('token: already used')
  end
  local now = now_ms()
  -- promote due delayed jobs
  local due = redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now, 'LIMIT', 0, PROMOTE_LIMIT)
  for _, jid in ipairs(due) do
    redis.call('ZREM', P .. 'delayed', jid)
    local job = load_job(P, jid)
    if job ~= nil and job.state == 'delayed' then
      redis.call('HSET', job_key(P, jid), 'state', 'queued')
      redis.call('ZADD', ready_key(P, job.queue),
                 ready_score(tonumber(job.prio), tonumber(job.seq)), jid)
    end
  end
  local scanned = 0
  for i = 5, #args do
    local queue = args[i]
    if redis.call('EXISTS', P .. 'q:' .. queue .. ':paused') == 0 then
      while scanned < CLAIM_SCAN_LIMIT do
        local top = redis.call('ZPOPMIN', ready_key(P, queue))
        if #top == 0 then break end
        scanned = scanned + 1
        local jid = top[1]
        local job = load_job(P, jid)
        if job ~= nil and job.state == 'queued' then
          local swst = nil
          if job.sweep ~= '' then
            swst = redis.call('HGET', sweep_key(P, job.sweep), 'state')
          end
          if swst == 'cancelled' then
            finish_failed(P, jid, job, 'cancelled', 'sweep cancelled', now)
          elseif swst == false then
            finish_failed(P, jid, job, 'cancelled', 'sweep gone', now)
          else
            local jk = job_key(P, jid)
            local attempts = tonumber(job.attempts) + 1
            redis.call('HSET', jk, 'state', 'running', 'token', token, 'owner', wid, 'attempts',
                       attempts, 'started_ms', now, 'lease_until', now + lease, 'hb_ms', now,
                       'cancel', '')
            redis.call('ZADD', P .. 'leases', now + lease, jid)
            local budget = tonumber(job.run_budget_ms)
            if budget > 0 then
              redis.call('ZADD', P .. 'budgets', now + budget, jid)
            end
            redis.call('SET', P .. 'tok:' .. token, jid, 'PX', 4 * lease)
            emit(P, now, 'claimed', jid, 'wid', wid, 'attempt', attempts)
            local r = redis.call('HMGET', jk, 'payload', 'checkpoint')
            return { jid, r[1] or '', tostring(attempts), r[2] or '', queue, job.sweep,
                     tostring(job.shard) }
          end
        end
      end
    end
  end
  return {}
end

-- gq_heartbeat P jid token lease_ms progress checkpoint
-- Returns {'ok', cancel} or {'lost'}; progress and checkpoint '' leave the stored ones.
local function gq_heartbeat(keys, args)
  local e = check_common(keys, args, 6)
  if e then return fail(e) end
  local P, jid, token = args[1], args[2], args[3]
  local lease = int_arg(args[4], 100, 86400000)
  if lease == nil then return fail('lease_ms: an integer 100..86400000') end
  if #args[5] > 4096 then return fail('progress: at most 4096 bytes') end
  if #args[6] > MAX_PAYLOAD then return fail('checkpoint: too large') end
  local job = owned_job(P, jid, token)
  if job == nil then return { 'lost' } end
  local now = now_ms()
  local jk = job_key(P, jid)
  redis.call('HSET', jk, 'lease_until', now + lease, 'hb_ms', now)
  redis.call('ZADD', P .. 'leases', 'XX', now + lease, jid)
  redis.call('PEXPIRE', P .. 'tok:' .. token, 4 * lease)
  if args[5] ~= '' and redis.call('HGET', jk, 'progress') ~= args[5] then
    redis.call('HSET', jk, 'progress', args[5])
    emit(P, now, 'progress', jid, 'progress', args[5], 'sweep', job.sweep)
  end
  if args[6] ~= '' then
    redis.call('HSET', jk, 'checkpoint', args[6])
  end
  return { 'ok', cancel_word(P, job) }
end

-- gq_complete P jid token result
-- Returns {'ok'}, {'dup'} (this token already committed, or the shard already had an outcome)
-- or {'lost'} (the token is no longer the job's).
local function gq_complete(keys, args)
  local e = check_common(keys, args, 4)
  if e then return fail(e) end
  local P, jid, token, result = args[1], args[2], args[3], args[4]
  if #result > MAX_PAYLOAD then return fail('result: larger than ' .. MAX_PAYLOAD .. ' bytes') end
  local job = load_job(P, jid)
  if job == nil then return { 'lost' } end
  if job.state ~= 'running' or job.token ~= token then
    if job.commit_token == token and token ~= '' then return { 'dup' } end
    return { 'lost' }
  end
  local now = now_ms()
  local jk = job_key(P, jid)
  unindex(P, jid, job.queue)
  redis.call('DEL', P .. 'tok:' .. token)
  redis.call('HSET', jk, 'state', 'succeeded', 'finished_ms', now, 'commit_token', token, 'token',
             '')
  redis.call('HDEL', jk, 'payload', 'checkpoint')
  redis.call('EXPIRE', jk, DONE_TTL_S)
  local status = 'ok'
  if job.sweep ~= '' then
    if not shard_terminal(P, job.sweep, tonumber(job.shard), result, nil, now) then
      status = 'dup'
    end
  elseif job.agg_of ~= nil and job.agg_of ~= '' then
    local sk = sweep_key(P, job.agg_of)
    if redis.call('HGET', sk, 'agg_job') == jid and
        redis.call('HGET', sk, 'state') == 'aggregating' then
      redis.call('HSET', sk, 'state', 'done', 'agg', result, 'finished_ms', now)
      emit(P, now, 'sweep_done', job.agg_of)
      sweep_final(P, job.agg_of, now)
    else
      redis.call('HSET', jk, 'result', result) -- a cancelled sweep keeps its state
    end
  else
    redis.call('HSET', jk, 'result', result)
  end
  emit(P, now, 'succeeded', jid, 'sweep', job.sweep)
  return { status }
end

-- gq_fail P jid token error retryable(0|1) backoff_ms
-- Returns {'retry', due_ms}, {'dead'} or {'lost'}.
local function gq_fail(keys, args)
  local e = check_common(keys, args, 6)
  if e then return fail(e) end
  local P, jid, token, err = args[1], args[2], args[3], args[4]
  local retryable = args[5] == '1'
  local backoff = int_arg(args[6], 0, 86400000)
  if backoff == nil then return fail('backoff_ms: an integer 0..86400000') end
  if #err > 65536 then err = string.sub(err, 1, 65536) end
  local job = owned_job(P, jid, token)
  if job == nil then return { 'lost' } end
  local now = now_ms()
  if not retryable or tonumber(job.attempts) >= tonumber(job.max_attempts) then
    job.token = token
    finish_failed(P, jid, job, 'dead', err, now)
    return { 'dead' }
  end
  unindex(P, jid, job.queue)
  redis.call('DEL', P .. 'tok:' .. token)
  redis.call('HSET', job_key(P, jid), 'state', 'delayed', 'token', '', 'error', err)
  redis.call('ZADD', P .. 'delayed', now + backoff, jid)
  emit(P, now, 'retry', jid, 'reason', err, 'due_ms', now + backoff)
  return { 'retry', tostring(now + backoff) }
end

-- gq_release P jid token checkpoint max_interrupts
-- Drain: the job goes back to the front of its queue with its checkpoint, the attempt refunded.
local function gq_release(keys, args)
  local e = check_common(keys, args, 5)
  if e then return fail(e) end
  local P, jid, token, ckpt = args[1], args[2], args[3], args[4]
  local max_int = int_arg(args[5], 0, 1000000)
  if max_int == nil then return fail('max_interrupts: a non-negative integer') end
  if #ckpt > MAX_PAYLOAD then return fail('checkpoint: too large') end
  local job = owned_job(P, jid, token)
  if job == nil then return { 'lost' } end
  local now = now_ms()
  local interrupts = tonumber(job.interrupts) + 1
  local jk = job_key(P, jid)
  if ckpt ~= '' then
    redis.call('HSET', jk, 'checkpoint', ckpt)
  end
  if interrupts > max_int then
    redis.call('HSET', jk, 'interrupts', interrupts)
    job.token = token
    finish_failed(P, jid, job, 'dead', 'interrupted-too-often', now)
    return { 'dead' }
  end
  unindex(P, jid, job.queue)
  redis.call('DEL', P .. 'tok:' .. token)
  redis.call('HSET', jk, 'state', 'queued', 'token', '', 'interrupts', interrupts, 'attempts',
             math.max(0, tonumber(job.attempts) - 1))
  -- the front of its priority band
  redis.call('ZADD', ready_key(P, job.queue), ready_score(tonumber(job.prio), 0), jid)
  emit(P, now, 'released', jid)
  return { 'ok' }
end

-- gq_cancel P jid: queued or delayed -> cancelled now; running -> flag (seen by the heartbeat).
local function gq_cancel(keys, args)
  local e = check_common(keys, args, 2)
  if e then return fail(e) end
  local P, jid = args[1], args[2]
  local job = load_job(P, jid)
  if job == nil then return fail('job ' .. jid .. ' does not exist') end
  local now = now_ms()
  if job.state == 'queued' or job.state == 'delayed' then
    finish_failed(P, jid, job, 'cancelled', 'cancelled by request', now)
    return { 'ok', 'cancelled' }
  end
  if job.state == 'running' then
    redis.call('HSET', job_key(P, jid), 'cancel', '1')
    redis.call('PUBLISH', P .. 'cancel', jid)
    emit(P, now, 'cancel_requested', jid)
    return { 'ok', 'cancelling' }
  end
  return { 'dup', job.state }
end

-- gq_cancelled P jid token: a worker acknowledges that it stopped a cancelled job.
local function gq_cancelled(keys, args)
  local e = check_common(keys, args, 3)
  if e then return fail(e) end
  local P, jid, token = args[1], args[2], args[3]
  local job = owned_job(P, jid, token)
  if job == nil then return { 'lost' } end
  local word = cancel_word(P, job)
  if word == '' then return fail('job ' .. jid .. ' was not asked to stop') end
  local now = now_ms()
  job.token = token
  if word == 'timeout' then
    finish_failed(P, jid, job, 'dead', 'run-budget-exceeded', now)
    return { 'ok', 'dead' }
  end
  finish_failed(P, jid, job, 'cancelled', word == 'sweep' and 'sweep cancelled' or
                'cancelled by request', now)
  return { 'ok', 'cancelled' }
end

-- gq_sweep_cancel P sid: queued and delayed shards end cancelled now, running ones are told
-- through their heartbeat; no aggregate runs.
local function gq_sweep_cancel(keys, args)
  local e = check_common(keys, args, 2)
  if e then return fail(e) end
  local P, sid = args[1], args[2]
  local sk = sweep_key(P, sid)
  local s = redis.call('HMGET', sk, 'state', 'expected')
  if s[1] == false then return fail('sweep ' .. sid .. ' does not exist') end
  if s[1] == 'done' or s[1] == 'cancelled' then return { 'dup', s[1] } end
  local now = now_ms()
  redis.call('HSET', sk, 'state', 'cancelled', 'finished_ms', now)
  -- at most SWEEP_CANCEL_EAGER shards are looked at here: the queued rest of a larger sweep are
  -- dropped when a claim pops them. A shard with neither a job hash nor an outcome was never
  -- enqueued (an open sweep) and counts as terminal, in `unsent` (a finished shard's hash
  -- expires after a week, but its outcome stays).
  local n = 0
  for i = 0, math.min(tonumber(s[2]), SWEEP_CANCEL_EAGER) - 1 do
    local jid = sid .. ':' .. i
    local job = load_job(P, jid)
    if job ~= nil and job.sweep ~= sid then
      job = nil -- a single job with a look-alike id: this shard can never be enqueued
    end
    if job == nil then
      if redis.call('GETBIT', sk .. ':term', i) == 0 then
        redis.call('HINCRBY', sk, 'unsent', 1)
      end
    elseif job.state == 'queued' or job.state == 'delayed' then
      finish_failed(P, jid, job, 'cancelled', 'sweep cancelled', now)
      n = n + 1
    elseif job.state == 'running' then
      redis.call('PUBLISH', P .. 'cancel', jid)
    end
  end
  local ajid = redis.call('HGET', sk, 'agg_job')
  if ajid then
    local job = load_job(P, ajid)
    if job ~= nil and (job.state == 'queued' or job.state == 'delayed') then
      finish_failed(P, ajid, job, 'cancelled', 'sweep cancelled', now)
    end
  end
  emit(P, now, 'sweep_cancelled', sid)
  sweep_check_final(P, sid, now)
  return { 'ok', tostring(n) }
end

-- gq_sweep_purge P sid [force]: deletes a sweep's keys and (up to PURGE_JOBS_MAX shards) its job
-- hashes now. Refused while the sweep is not final (open, sealed, aggregating, or cancelled with
-- shards still running) unless force is 1. Returns {'ok', n_jobs_deleted}, {'refused', state}
-- or {'dup'} (no such sweep).
local function gq_sweep_purge(keys, args)
  local e = check_common(keys, args, 2)
  if e then return fail(e) end
  local P, sid = args[1], args[2]
  local force = args[3] or '0'
  if not id_ok(sid) or string.find(sid, ':', 1, true) then
    return fail('sid: 1-200 bytes without spaces or ":"')
  end
  if force ~= '0' and force ~= '1' then return fail('force: 0 or 1') end
  local sk = sweep_key(P, sid)
  local s = redis.call('HMGET', sk, 'state', 'expected', 'ok', 'failed', 'unsent', 'round')
  if s[1] == false then return { 'dup' } end
  if force ~= '1' and not sweep_is_final(s[1], s[2], s[3], s[4], s[5]) then
    return { 'refused', s[1] }
  end
  local now = now_ms()
  local jids = {}
  for i = 0, math.min(tonumber(s[2]) or 0, PURGE_JOBS_MAX) - 1 do
    table.insert(jids, sid .. ':' .. i)
  end
  for r = 1, tonumber(s[6] or '0') or 0 do
    table.insert(jids, 'agg:' .. sid .. ':' .. r)
  end
  local n = 0
  for _, jid in ipairs(jids) do
    local job = load_job(P, jid)
    -- only this sweep's jobs: a single job may carry a look-alike id
    if job ~= nil and (job.sweep == sid or job.agg_of == sid) then
      unindex(P, jid, job.queue)
      redis.call('ZREM', P .. 'dead', jid)
      redis.call('ZREM', P .. 'expiring', jid)
      if job.token ~= nil and job.token ~= '' then
        redis.call('DEL', P .. 'tok:' .. job.token)
      end
      if job.state == 'running' then
        redis.call('PUBLISH', P .. 'cancel', jid)
      end
      redis.call('DEL', job_key(P, jid))
      n = n + 1
    end
  end
  for _, suffix in ipairs(SWEEP_SUFFIXES) do
    redis.call('DEL', sk .. suffix)
  end
  redis.call('ZREM', P .. 'sweeps', sid)
  redis.call('ZREM', P .. 'expiring', sid)
  emit(P, now, 'sweep_purged', sid, 'state', s[1], 'jobs', n)
  return { 'ok', tostring(n) }
end

-- gq_reap P limit max_stalls backoff_ms
-- Budgets past due -> cancel=timeout; expired leases -> stalls+1, then delayed, dead or
-- cancelled; sweeps and dead jobs whose retention ran out leave the `sweeps` and `dead` zsets.
-- Returns {'ok', n_reaped, n_timeouts}. Safe to run from every daemon at once.
local function gq_reap(keys, args)
  local e = check_common(keys, args, 4)
  if e then return fail(e) end
  local P = args[1]
  local limit = int_arg(args[2], 1, 10000)
  local max_stalls = int_arg(args[3], 0, 1000)
  local backoff = int_arg(args[4], 0, 86400000)
  if limit == nil or max_stalls == nil or backoff == nil then
    return fail('limit 1..10000, max_stalls 0..1000, backoff_ms 0..86400000')
  end
  local now = now_ms()
  local n_timeouts = 0
  for _, jid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'budgets', '-inf', now, 'LIMIT', 0,
                                  limit)) do
    redis.call('ZREM', P .. 'budgets', jid)
    local job = load_job(P, jid)
    if job ~= nil and job.state == 'running' and (job.cancel == nil or job.cancel == '') then
      redis.call('HSET', job_key(P, jid), 'cancel', 'timeout')
      redis.call('PUBLISH', P .. 'cancel', jid)
      emit(P, now, 'timeout', jid)
      n_timeouts = n_timeouts + 1
    end
  end
  local n = 0
  for _, jid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0,
                                  limit)) do
    redis.call('ZREM', P .. 'leases', jid)
    local job = load_job(P, jid)
    if job ~= nil and job.state == 'running' then
      n = n + 1
      local stalls = tonumber(job.stalls) + 1
      local jk = job_key(P, jid)
      redis.call('HSET', jk, 'stalls', stalls)
      emit(P, now, 'stalled', jid, 'stalls', stalls)
      local word = cancel_word(P, job)
      if word == 'timeout' then
        finish_failed(P, jid, job, 'dead', 'run-budget-exceeded', now)
      elseif word ~= '' then
        finish_failed(P, jid, job, 'cancelled', word == 'sweep' and 'sweep cancelled' or
                      'cancelled by request', now)
      elseif stalls > max_stalls or tonumber(job.attempts) >= tonumber(job.max_attempts) then
        finish_failed(P, jid, job, 'dead', 'lease-expired-too-often', now)
      else
        redis.call('ZREM', P .. 'budgets', jid)
        redis.call('DEL', P .. 'tok:' .. job.token)
        redis.call('HSET', jk, 'state', 'delayed', 'token', '')
        redis.call('ZADD', P .. 'delayed', now + backoff, jid)
      end
    end
  end
  -- at most `limit` due entries of `expiring` (sids, and jids, which hold a ':'): once the key
  -- is gone its zset entry goes; a key kept after all (PERSIST) leaves `expiring`; a key that
  -- still has a ttl is looked at again when it is due
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', P .. 'expiring', '-inf', now, 'LIMIT', 0,
                                limit)) do
    local is_job = string.find(m, ':', 1, true) ~= nil
    local ttl = redis.call('PTTL', is_job and job_key(P, m) or sweep_key(P, m))
    if ttl == -2 then
      redis.call('ZREM', P .. (is_job and 'dead' or 'sweeps'), m)
      redis.call('ZREM', P .. 'expiring', m)
    elseif ttl == -1 then
      redis.call('ZREM', P .. 'expiring', m)
    else
      redis.call('ZADD', P .. 'expiring', now + ttl, m)
    end
  end
  return { 'ok', tostring(n), tostring(n_timeouts) }
end

-- gq_token_lookup P token (read-only): the job a claim token holds, or ''.
local function gq_token_lookup(keys, args)
  local e = check_common(keys, args, 2)
  if e then return fail(e) end
  return { redis.call('GET', args[1] .. 'tok:' .. args[2]) or '' }
end

-- gq_adopt P token (read-only): the claim reply of the running job a token holds ({} when
-- none), for a worker whose gq_claim reply was lost.
local function gq_adopt(keys, args)
  local e = check_common(keys, args, 2)
  if e then return fail(e) end
  local P, token = args[1], args[2]
  local jid = redis.call('GET', P .. 'tok:' .. token)
  if not jid then return {} end
  local job = owned_job(P, jid, token)
  if job == nil then return {} end
  local r = redis.call('HMGET', job_key(P, jid), 'payload', 'checkpoint')
  return { jid, r[1] or '', tostring(job.attempts), r[2] or '', job.queue, job.sweep,
           tostring(job.shard) }
end

-- gq_pause P queue 1|0
local function gq_pause(keys, args)
  local e = check_common(keys, args, 3)
  if e then return fail(e) end
  local P, queue = args[1], args[2]
  if not id_ok(queue) then return fail('queue: bad name') end
  local now = now_ms()
  if args[3] == '1' then
    redis.call('SET', P .. 'q:' .. queue .. ':paused', now)
    redis.call('SADD', P .. 'queues', queue)
    emit(P, now, 'paused', '', 'queue', queue)
  else
    redis.call('DEL', P .. 'q:' .. queue .. ':paused')
    emit(P, now, 'resumed', '', 'queue', queue)
  end
  return { 'ok' }
end

-- gq_dlq_retry P jid: a dead job goes back to its queue with fresh attempts; a dead shard's
-- outcome is cleared, and a sweep that already fanned in is reopened for another round.
local function gq_dlq_retry(keys, args)
  local e = check_common(keys, args, 2)
  if e then return fail(e) end
  local P, jid = args[1], args[2]
  local job = load_job(P, jid)
  if job == nil then return fail('job ' .. jid .. ' does not exist') end
  if job.state ~= 'dead' then return { 'dup', job.state } end
  local sk = nil
  if job.sweep ~= '' then
    sk = sweep_key(P, job.sweep)
    local st = redis.call('HGET', sk, 'state')
    if st == false then return { 'refused', 'sweep gone' } end
    if st == 'cancelled' then return { 'refused', 'sweep cancelled' } end
    if st == 'aggregating' then return { 'refused', 'sweep aggregating; retry when done' } end
  end
  -- a dead aggregate job that is its sweep's current one reopens the sweep to aggregating, so
  -- its commit stores `agg` as a first run's would
  local agg_sk = nil
  if job.agg_of ~= nil and job.agg_of ~= '' then
    local a = redis.call('HMGET', sweep_key(P, job.agg_of), 'state', 'agg_job')
    if a[1] == false then return { 'refused', 'sweep gone' } end
    if a[1] == 'done' and a[2] == jid then
      agg_sk = sweep_key(P, job.agg_of)
    end
  end
  local now = now_ms()
  if agg_sk ~= nil then
    redis.call('HSET', agg_sk, 'state', 'aggregating')
    redis.call('HDEL', agg_sk, 'agg_error', 'finished_ms')
    sweep_persist(P, job.agg_of)
  end
  if sk ~= nil then
    if redis.call('GETBIT', sk .. ':term', tonumber(job.shard)) == 1 and
        redis.call('HEXISTS', sk .. ':err', job.shard) == 1 then
      redis.call('SETBIT', sk .. ':term', tonumber(job.shard), 0)
      redis.call('HDEL', sk .. ':err', job.shard)
      redis.call('HINCRBY', sk, 'failed', -1)
    end
    if redis.call('HGET', sk, 'state') == 'done' then
      redis.call('HSET', sk, 'state', 'sealed')
      sweep_persist(P, job.sweep)
    end
  end
  redis.call('ZREM', P .. 'dead', jid)
  redis.call('ZREM', P .. 'expiring', jid)
  redis.call('HSET', job_key(P, jid), 'state', 'queued', 'attempts', 0, 'stalls', 0,
             'interrupts', 0, 'cancel', '', 'error', '')
  redis.call('PERSIST', job_key(P, jid))
  redis.call('ZADD', ready_key(P, job.queue), ready_score(tonumber(job.prio), tonumber(job.seq)),
             jid)
  emit(P, now, 'retried', jid)
  return { 'ok' }
end

-- gq_worker P wid info ttl_ms: registers a live worker (info is a JSON object).
local function gq_worker(keys, args)
  local e = check_common(keys, args, 4)
  if e then return fail(e) end
  local P, wid = args[1], args[2]
  local ttl = int_arg(args[4], 100, 86400000)
  if not id_ok(wid) then return fail('wid: bad worker id') end
  if ttl == nil then return fail('ttl_ms: an integer 100..86400000') end
  if #args[3] > 65536 then return fail('info: at most 64 KiB') end
  local now = now_ms()
  redis.call('ZADD', P .. 'workers', now, wid)
  redis.call('HSET', P .. 'worker:' .. wid, 'info', args[3], 'seen_ms', now)
  redis.call('PEXPIRE', P .. 'worker:' .. wid, ttl)
  -- forget workers silent for a day
  redis.call('ZREMRANGEBYSCORE', P .. 'workers', '-inf', now - 86400000)
  return { 'ok', tostring(now) }
end

-- gq_stats P (read-only): {now_ms, n_queues, then per queue: name, ready, paused(0|1)}, then
-- delayed, leases, dead totals.
local function gq_stats(keys, args)
  local e = check_common(keys, args, 1)
  if e then return fail(e) end
  local P = args[1]
  local t = redis.call('TIME')
  local out = { tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) }
  local queues = redis.call('SMEMBERS', P .. 'queues')
  table.sort(queues)
  table.insert(out, tostring(#queues))
  for _, q in ipairs(queues) do
    table.insert(out, q)
    table.insert(out, tostring(redis.call('ZCARD', ready_key(P, q))))
    table.insert(out, tostring(redis.call('EXISTS', P .. 'q:' .. q .. ':paused')))
  end
  table.insert(out, tostring(redis.call('ZCARD', P .. 'delayed')))
  table.insert(out, tostring(redis.call('ZCARD', P .. 'leases')))
  table.insert(out, tostring(redis.call('ZCARD', P .. 'dead')))
  return out
end

-- gq_schedule_set P name cron template_meta n_shards [retention_ms]: creates or replaces a
-- schedule whose shard payloads are stored by the caller in <P>sched:<name>:shards (HSET index ->
-- payload) before this call. The schedule fires for due times after now; each sweep it fires
-- gets the retention (0 or absent: kept forever).
local function gq_schedule_set(keys, args)
  local e = check_common(keys, args, 5)
  if e then return fail(e) end
  local P, name, cron, meta = args[1], args[2], args[3], args[4]
  local n = int_arg(args[5], 1, 100000000)
  if not id_ok(name) or string.find(name, ':', 1, true) then
    return fail('name: 1-200 bytes without spaces or ":"')
  end
  if n == nil then return fail('n_shards: an integer >= 1') end
  if #cron < 9 or #cron > 200 then return fail('cron: five fields') end
  local keep = 0
  if args[6] ~= nil then
    keep = int_arg(args[6], 0, RETENTION_MAX_MS)
    if keep == nil then
      return fail('retention_ms: an integer 0..' .. RETENTION_MAX_MS .. ' (0: keep forever)')
    end
  end
  if redis.call('HLEN', P .. 'sched:' .. name .. ':shards') ~= n then
    return fail('store the ' .. n .. ' shard payloads in ' .. P .. 'sched:' .. name ..
                ':shards first')
  end
  local now = now_ms()
  redis.call('HSET', P .. 'sched:' .. name, 'cron', cron, 'meta', meta, 'n_shards', n,
             'created_ms', now, 'last_due_ms', now, 'retention_ms', keep)
  redis.call('SADD', P .. 'schedules', name)
  emit(P, now, 'schedule_set', name, 'cron', cron)
  return { 'ok' }
end

-- gq_schedule_remove P name
local function gq_schedule_remove(keys, args)
  local e = check_common(keys, args, 2)
  if e then return fail(e) end
  local P, name = args[1], args[2]
  if redis.call('SREM', P .. 'schedules', name) == 0 then return { 'dup' } end
  redis.call('DEL', P .. 'sched:' .. name, P .. 'sched:' .. name .. ':shards',
             P .. 'sched:' .. name .. ':labels')
  emit(P, now_ms(), 'schedule_removed', name)
  return { 'ok' }
end

-- gq_schedule_fire P name due_ms sid queue prio max_attempts run_budget_ms agg_queue
-- Creates the run of a schedule due at due_ms as sweep `sid` (all shards enqueued and sealed),
-- exactly once: a due time not after the last fired one returns {'dup'}.
local function gq_schedule_fire(keys, args)
  local e = check_common(keys, args, 9)
  if e then return fail(e) end
  local P, name = args[1], args[2]
  local due = int_arg(args[3], 0, 1e15)
  local sid, queue = args[4], args[5]
  local prio = int_arg(args[6], 0, MAX_PRIO)
  local max_attempts = int_arg(args[7], 1, 1000)
  local budget = int_arg(args[8], 0, 365 * 86400000)
  if due == nil or prio == nil or max_attempts == nil or budget == nil then
    return fail('due_ms, prio, max_attempts, run_budget_ms: integers in range')
  end
  if not id_ok(sid) or string.find(sid, ':', 1, true) then return fail('sid: bad id') end
  if not id_ok(queue) then return fail('queue: bad name') end
  local hk = P .. 'sched:' .. name
  local s = redis.call('HMGET', hk, 'last_due_ms', 'n_shards', 'meta', 'retention_ms')
  if s[1] == false then return fail('schedule ' .. name .. ' does not exist') end
  local now = now_ms()
  if due <= tonumber(s[1]) or due > now then return { 'dup' } end
  local sk = sweep_key(P, sid)
  if redis.call('EXISTS', sk) == 1 then return fail('sweep ' .. sid .. ' already exists') end
  local n = tonumber(s[2])
  if redis.call('HLEN', hk .. ':shards') ~= n then
    return fail('schedule ' .. name .. ': ' .. n .. ' shard payloads expected in ' .. hk ..
                ':shards')
  end
  redis.call('HSET', hk, 'last_due_ms', due, 'last_sweep', sid)
  redis.call('HSET', sk, 'state', 'sealed', 'expected', n, 'ok', 0, 'failed', 0, 'agg_queue',
             args[9], 'agg_prio', prio, 'meta', s[3], 'created_ms', now, 'sealed_ms', now,
             'round', 0, 'schedule', name, 'retention_ms', tonumber(s[4] or '0') or 0)
  redis.call('ZADD', P .. 'sweeps', now, sid)
  local labels = redis.call('GET', hk .. ':labels')
  if labels then
    redis.call('SET', sk .. ':labels', labels)
  end
  for i = 0, n - 1 do
    local payload = redis.call('HGET', hk .. ':shards', tostring(i))
    local jid = sid .. ':' .. i
    local seq = redis.call('INCR', P .. 'seq')
    redis.call('HSET', job_key(P, jid), 'state', 'queued', 'queue', queue, 'prio', prio, 'seq',
               seq, 'payload', payload, 'attempts', 0, 'max_attempts', max_attempts, 'stalls', 0,
               'interrupts', 0, 'run_budget_ms', budget, 'sweep', sid, 'shard', i, 'created_ms',
               now)
    redis.call('ZADD', ready_key(P, queue), ready_score(prio, seq), jid)
  end
  redis.call('SADD', P .. 'queues', queue)
  emit(P, now, 'schedule_fired', name, 'sweep', sid, 'due_ms', due)
  return { 'ok', sid }
end

-- gq_version P (read-only)
local function gq_version(keys, args)
  return { VERSION }
end

local function reg(name, fn, ro)
  redis.register_function{ function_name = name, callback = fn,
                           flags = ro and { 'no-writes' } or {} }
end

reg('gq_enqueue', gq_enqueue)
reg('gq_sweep_create', gq_sweep_create)
reg('gq_sweep_seal', gq_sweep_seal)
reg('gq_claim', gq_claim)
reg('gq_heartbeat', gq_heartbeat)
reg('gq_complete', gq_complete)
reg('gq_fail', gq_fail)
reg('gq_release', gq_release)
reg('gq_cancel', gq_cancel)
reg('gq_cancelled', gq_cancelled)
reg('gq_sweep_cancel', gq_sweep_cancel)
reg('gq_sweep_purge', gq_sweep_purge)
reg('gq_reap', gq_reap)
reg('gq_token_lookup', gq_token_lookup, true)
reg('gq_adopt', gq_adopt, true)
reg('gq_pause', gq_pause)
reg('gq_dlq_retry', gq_dlq_retry)
reg('gq_worker', gq_worker)
reg('gq_stats', gq_stats, true)
reg('gq_schedule_set', gq_schedule_set)
reg('gq_schedule_remove', gq_schedule_remove)
reg('gq_schedule_fire', gq_schedule_fire)
reg('gq_version', gq_version, true)
