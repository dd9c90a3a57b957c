"""The Redis job store's Lua scripts: every state change is one atomic script.

Why scripts: a change touches the job's hash, its stream entry, the lease and state
indexes and the waiting count together. A script makes them one step (no half-done
change for a crash to leave behind) and one round trip, and takes whole batches.

Keys, all under one hash tag (``{canopy}`` by default) so that on Redis Cluster
every key of a deployment lives in one slot and the scripts may touch them all::

    {P}:job:<id>                 hash: the job's fields (absent = None), plus
                                 ``entry`` (its stream entry) and ``cancel``
    {P}:idem:<key>               the job id holding an idempotency key (SET NX)
    {P}:ready:<queue>:<prio>     stream of due jobs, consumer group ``workers``;
                                 a claim is XREADGROUP, XACK only once done
    {P}:prios:<queue>            sorted set of the priorities that have a stream
    {P}:delayed:<queue>          sorted set of jobs not yet due, by run_at
    {P}:leases                   sorted set of running jobs, by lease expiry
    {P}:waiting                  hash: queue -> waiting jobs (the queue bound)
    {P}:jobs, {P}:state:<state>  sorted sets by created_at, for listing
    {P}:cancel                   pub/sub channel: ids of running jobs to cancel

KEYS[1] is always ``{P}:jobs``: it routes the call to the slot (Cluster); the
script builds the other names from ARGV[1], the prefix ``{P}``.

Values are strings as Python wrote them (floats by repr, so nothing is lost to Lua's
doubles on the way back). A job goes in as a JSON object of such strings, JSON null
meaning "delete this field", and comes back as one (``record``).
"""

from __future__ import annotations

__all__ = [
    "CANCEL",
    "CLAIM",
    "ENQUEUE",
    "FINISH",
    "HEARTBEAT",
    "LIST",
    "NEXT_DUE",
    "PROGRESS",
    "QUEUE_STATS",
    "REQUEUE_EXPIRED",
    "RETRY_DEAD",
]

_PRELUDE = """
local P = ARGV[1]
local WAITING = {queued = true, scheduled = true, retrying = true}
local function jkey(id) return P .. ':job:' .. id end
local function stream_of(queue, prio) return P .. ':ready:' .. queue .. ':' .. prio end

local function file_state(id, old, new, created)
    if old then redis.call('ZREM', P .. ':state:' .. old, id) end
    redis.call('ZADD', P .. ':state:' .. new, created, id)
end

-- A job that ended: its record, and its idempotency key if it has one, outlive it by
-- the result TTL.
local function expire_ended(key, idempotency_key, ttl)
    redis.call('EXPIRE', key, ttl)
    if idempotency_key then redis.call('EXPIRE', P .. ':idem:' .. idempotency_key, ttl) end
end

-- A waiting job goes to its priority's stream when due, else to the delayed set.
local ready = false  -- a job went to a stream: announced at the script's end
local function place(id, queue, prio, run_at, now)
    redis.call('HINCRBY', P .. ':waiting', queue, 1)
    if tonumber(run_at) > now then
        redis.call('ZADD', P .. ':delayed:' .. queue, run_at, id)
        return
    end
    local stream = stream_of(queue, prio)
    if redis.call('ZADD', P .. ':prios:' .. queue, 'NX', prio, prio) == 1 then
        redis.pcall('XGROUP', 'CREATE', stream, 'workers', '0', 'MKSTREAM')
    end
    redis.call('HSET', jkey(id), 'entry', redis.call('XADD', stream, '*', 'id', id))
    ready = true
end

-- Every process's store hears it (RedisJobStore), so idle runners claim at once
-- instead of at their next poll.
local function announce()
    if ready then redis.call('PUBLISH', P .. ':ready', '') end
end

-- Take a waiting job out of line (claimed, cancelled): its stream entry or delay.
local function unplace(id, queue, prio, entry)
    redis.call('HINCRBY', P .. ':waiting', queue, -1)
    if entry then
        redis.call('XDEL', stream_of(queue, prio), entry)
    else
        redis.call('ZREM', P .. ':delayed:' .. queue, id)
    end
end

-- A job's hash as one JSON object of strings: one reply to decode, not 2 per field.
local function record(id)
    local flat = redis.call('HGETALL', jkey(id))
    if #flat == 0 then return false end
    local fields = {}
    for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
    return cjson.encode(fields)
end

local function set_fields(key, fields)
    local set, del = {}, {}
    for name, value in pairs(fields) do
        if value == cjson.null then
            del[#del + 1] = name
        else
            set[#set + 1] = name
            set[#set + 1] = value
        end
    end
    if #set > 0 then redis.call('HSET', key, unpack(set)) end
    if #del > 0 then redis.call('HDEL', key, unpack(del)) end
end

-- The run_at of the queue's earliest job in its streams that no runner has read yet:
-- as a number, and as stored (a Lua double would print it otherwise); nil and ''
-- when there is none.
local function earliest_ready(queue)
    local earliest, shown = nil, ''
    for _, prio in ipairs(redis.call('ZRANGE', P .. ':prios:' .. queue, 0, -1)) do
        local stream = stream_of(queue, prio)
        local groups = redis.pcall('XINFO', 'GROUPS', stream)
        if type(groups) == 'table' and not groups.err and #groups > 0 then
            local info = groups[1]
            local last = '0-0'
            for j = 1, #info, 2 do
                if info[j] == 'last-delivered-id' then last = info[j + 1] end
            end
            local next = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)
            if #next > 0 then
                local stored = redis.call('HGET', jkey(next[1][2][2]), 'run_at')
                local run_at = tonumber(stored)
                if run_at and (earliest == nil or run_at < earliest) then
                    earliest, shown = run_at, stored
                end
            end
        end
    end
    return earliest, shown
end
"""

# ARGV: prefix, now, max_queued, job... -> per job {'new'} | {'existing', fields} | {'full'}
ENQUEUE = (
    _PRELUDE
    + """
local now, max_queued = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV do
    local job = cjson.decode(ARGV[i])
    local existing = nil
    local idem = job.idempotency_key
    if redis.call('EXISTS', jkey(job.id)) == 1 then
        out[i - 3] = {'new'}  -- this very batch, sent again after a lost reply
    elseif idem ~= nil and idem ~= cjson.null then
        local ikey = P .. ':idem:' .. idem
        if not redis.call('SET', ikey, job.id, 'NX') then
            existing = redis.call('GET', ikey)
            if redis.call('EXISTS', jkey(existing)) == 0 then
                existing = nil  -- a leftover of an expired job: the key is free again
            end
        end
    end
    local waiting = tonumber(redis.call('HGET', P .. ':waiting', job.queue) or '0')
    if out[i - 3] then
        -- answered above
    elseif existing then
        out[i - 3] = {'existing', record(existing)}
    elseif waiting >= max_queued then
        if idem ~= nil and idem ~= cjson.null then
            redis.call('DEL', P .. ':idem:' .. idem)
        end
        out[i - 3] = {'full'}
    else
        if idem ~= nil and idem ~= cjson.null then
            redis.call('SET', P .. ':idem:' .. idem, job.id)
        end
        set_fields(jkey(job.id), job)
        redis.call('ZADD', P .. ':jobs', job.created_at, job.id)
        file_state(job.id, nil, job.state, job.created_at)
        place(job.id, job.queue, job.priority, job.run_at, now)
        out[i - 3] = {'new'}
    end
end
announce()
return out
"""
)

# ARGV: prefix, now, queue, owner, limit, lease expiry -> claimed jobs' fields
CLAIM = (
    _PRELUDE
    + """
local now, queue, owner = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local remaining, expires = tonumber(ARGV[5]), ARGV[6]
local delayed = P .. ':delayed:' .. queue
for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)) do
    redis.call('ZREM', delayed, id)
    redis.call('HINCRBY', P .. ':waiting', queue, -1)  -- place() counts it again
    local job = redis.call('HMGET', jkey(id), 'priority', 'run_at')
    if job[1] then place(id, queue, job[1], job[2], now) end
end
local claimed = {}
for _, prio in ipairs(redis.call('ZRANGE', P .. ':prios:' .. queue, 0, -1)) do
    if remaining <= 0 then break end
    local stream = stream_of(queue, prio)
    local read = redis.pcall(
        'XREADGROUP', 'GROUP', 'workers', owner, 'COUNT', remaining, 'STREAMS', stream, '>')
    if type(read) == 'table' and read.err then
        redis.pcall('XGROUP', 'CREATE', stream, 'workers', '0', 'MKSTREAM')  -- lost: again
        read = nil
    end
    if read then
        for _, entry in ipairs(read[1][2]) do
            local id = entry[2][2]
            local key = jkey(id)
            local job = redis.call('HMGET', key, 'state', 'created_at')
            if job[1] and WAITING[job[1]] then
                redis.call('HINCRBY', P .. ':waiting', queue, -1)
                redis.call('HINCRBY', key, 'attempts', 1)
                redis.call('HSET', key, 'state', 'running', 'lease_owner', owner,
                    'lease_expires', expires, 'updated_at', ARGV[2], 'entry', entry[1])
                redis.call('ZADD', P .. ':leases', expires, id)
                file_state(id, job[1], 'running', job[2])
                claimed[#claimed + 1] = record(id)
                remaining = remaining - 1
            else  -- an entry whose job is gone or no longer waits: drop it
                redis.call('XACK', stream, 'workers', entry[1])
                redis.call('XDEL', stream, entry[1])
            end
        end
    end
end
return claimed
"""
)

# ARGV: prefix, owner, lease expiry, id... -> ids asked to cancel
HEARTBEAT = (
    _PRELUDE
    + """
local owner, expires = ARGV[2], ARGV[3]
local cancel = {}
for i = 4, #ARGV do
    local id = ARGV[i]
    local job = redis.call('HMGET', jkey(id), 'state', 'lease_owner', 'cancel')
    if job[1] == 'running' and job[2] == owner then
        redis.call('HSET', jkey(id), 'lease_expires', expires)
        redis.call('ZADD', P .. ':leases', 'XX', expires, id)
    end
    if job[3] == '1' then cancel[#cancel + 1] = id end
end
return cancel
"""
)

# ARGV: prefix, now, owner, result ttl, outcome... -> per outcome the state recorded, or
# '' where the lease was lost
FINISH = (
    _PRELUDE
    + """
local now, owner, ttl = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local recorded = {}
for i = 5, #ARGV do
    local outcome = cjson.decode(ARGV[i])
    local id = outcome.id
    local key = jkey(id)
    local job = redis.call('HMGET', key, 'state', 'lease_owner', 'queue', 'priority', 'entry',
        'created_at', 'idempotency_key', 'cancel')
    if job[1] == 'running' and job[2] == owner then
        -- Asked to cancel while it ran: cancelled, whatever its runner would wait for
        -- next (a retry, a release by a runner that stopped). The cancel was answered.
        if job[8] == '1' and WAITING[outcome.state] then outcome.state = 'cancelled' end
        local stream = stream_of(job[3], job[4])
        redis.call('XACK', stream, 'workers', job[5])  -- acknowledged only now it is done
        redis.call('XDEL', stream, job[5])
        redis.call('ZREM', P .. ':leases', id)
        redis.call('HDEL', key, 'entry', 'cancel')
        set_fields(key, outcome)
        file_state(id, 'running', outcome.state, job[6])
        if WAITING[outcome.state] then
            place(id, job[3], job[4], outcome.run_at, now)
        else
            expire_ended(key, job[7], ttl)
        end
        recorded[i - 4] = outcome.state
    else
        recorded[i - 4] = ''
    end
end
announce()  -- retries due now, and jobs released by a runner that stopped
return recorded
"""
)

# ARGV: prefix, id, owner, progress, now -> 1 if recorded
PROGRESS = (
    _PRELUDE
    + """
local key = jkey(ARGV[2])
local job = redis.call('HMGET', key, 'state', 'lease_owner')
if job[1] ~= 'running' or job[2] ~= ARGV[3] then return 0 end
redis.call('HSET', key, 'progress', ARGV[4], 'updated_at', ARGV[5])
return 1
"""
)

# ARGV: prefix, now, id, result ttl -> the job's fields after, or nil
CANCEL = (
    _PRELUDE
    + """
local id, ttl = ARGV[3], ARGV[4]
local key = jkey(id)
local job = redis.call('HMGET', key, 'state', 'queue', 'priority', 'entry', 'created_at',
    'idempotency_key')
if not job[1] then return nil end
if WAITING[job[1]] then
    unplace(id, job[2], job[3], job[4])
    redis.call('HDEL', key, 'entry')
    redis.call('HSET', key, 'state', 'cancelled', 'updated_at', ARGV[2])
    file_state(id, job[1], 'cancelled', job[5])
    expire_ended(key, job[6], ttl)
elseif job[1] == 'running' then
    redis.call('HSET', key, 'cancel', '1')
    redis.call('PUBLISH', P .. ':cancel', id)  -- the running worker hears it at once
end
return record(id)
"""
)

# ARGV: prefix, now, id -> the job's fields after, or nil
RETRY_DEAD = (
    _PRELUDE
    + """
local id = ARGV[3]
local key = jkey(id)
local job = redis.call('HMGET', key, 'state', 'queue', 'priority', 'created_at',
    'idempotency_key')
if not job[1] then return nil end
if job[1] == 'failed' then
    redis.call('PERSIST', key)
    if job[5] then redis.call('PERSIST', P .. ':idem:' .. job[5]) end
    redis.call('HSET', key, 'state', 'queued', 'attempts', '0', 'run_at', ARGV[2],
        'updated_at', ARGV[2])
    redis.call('HDEL', key, 'error', 'traceback')
    file_state(id, 'failed', 'queued', job[4])
    place(id, job[2], job[3], ARGV[2], tonumber(ARGV[2]))
end
announce()
return record(id)
"""
)

# ARGV: prefix, now, result ttl -> how many expired leases were requeued or cancelled
REQUEUE_EXPIRED = (
    _PRELUDE
    + """
local now = tonumber(ARGV[2])
local count = 0
local leases = P .. ':leases'
for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', '(' .. ARGV[2],
        'LIMIT', 0, 1000)) do
    redis.call('ZREM', leases, id)
    local key = jkey(id)
    local job = redis.call('HMGET', key, 'state', 'queue', 'priority', 'entry', 'created_at',
        'run_at', 'cancel', 'idempotency_key')
    if job[1] == 'running' then
        local stream = stream_of(job[2], job[3])
        redis.call('XACK', stream, 'workers', job[4])
        redis.call('XDEL', stream, job[4])
        redis.call('HDEL', key, 'lease_owner', 'lease_expires', 'entry', 'cancel')
        if job[7] == '1' then  -- its worker died after a cancel was answered
            redis.call('HSET', key, 'state', 'cancelled', 'updated_at', ARGV[2])
            file_state(id, 'running', 'cancelled', job[5])
            expire_ended(key, job[8], ARGV[3])
        else
            redis.call('HSET', key, 'state', 'queued', 'updated_at', ARGV[2])
            file_state(id, 'running', 'queued', job[5])
            place(id, job[2], job[3], job[6], now)
        end
        count = count + 1
    end
end
announce()
-- Forget listed ids whose records expired (terminal results outlive their TTL).
local horizon = now - tonumber(ARGV[3])
for _, state in ipairs({'succeeded', 'failed', 'cancelled'}) do
    local index = P .. ':state:' .. state
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', horizon, 'LIMIT', 0, 1000)) do
        if redis.call('EXISTS', jkey(id)) == 0 then
            redis.call('ZREM', index, id)
            redis.call('ZREM', P .. ':jobs', id)
        end
    end
end
return count
"""
)

# ARGV: prefix, index key suffix, limit, created_at bound and id bound ('' and '' for
# none) -> the fields of up to limit jobs, newest first, each older than (bound, id): created
# before the bound, or at it with a lower id. An index entry whose record has expired
# is passed over, and the scan goes on for the page to fill.
LIST = (
    _PRELUDE
    + """
local index, limit = P .. ':' .. ARGV[2], tonumber(ARGV[3])
local bounded = ARGV[4] ~= ''
local bound, after = bounded and ARGV[4] or '+inf', ARGV[5]
local below = bounded and tonumber(bound)
local out, offset = {}, 0
while #out < limit do
    local page = redis.call('ZREVRANGEBYSCORE', index, bound, '-inf', 'WITHSCORES',
        'LIMIT', offset, limit)
    if #page == 0 then break end
    for i = 1, #page, 2 do
        local id = page[i]
        -- at the bound itself, members come in reverse order of id: older are lower
        if not bounded or tonumber(page[i + 1]) < below or id < after then
            local job = record(id)
            if job then
                out[#out + 1] = job
                if #out == limit then break end
            end
        end
    end
    offset = offset + #page / 2
end
return out
"""
)

# ARGV: prefix, now -> {queue, waiting, earliest due run_at or ''} per queue with waiting jobs
QUEUE_STATS = (
    _PRELUDE
    + """
local now = tonumber(ARGV[2])
local out = {}
local counts = redis.call('HGETALL', P .. ':waiting')
for i = 1, #counts, 2 do
    local queue, waiting = counts[i], tonumber(counts[i + 1])
    if waiting > 0 then
        local oldest, shown = earliest_ready(queue)
        local due = redis.call('ZRANGEBYSCORE', P .. ':delayed:' .. queue, '-inf', now,
            'WITHSCORES', 'LIMIT', 0, 1)
        if #due > 0 and (oldest == nil or tonumber(due[2]) < oldest) then
            shown = due[2]
        end
        out[#out + 1] = {queue, counts[i + 1], shown}
    end
end
return out
"""
)

# ARGV: prefix, queue -> the run_at of the queue's earliest waiting job, as stored, or ''
NEXT_DUE = (
    _PRELUDE
    + """
local queue = ARGV[2]
local earliest, shown = earliest_ready(queue)
local delayed = redis.call('ZRANGE', P .. ':delayed:' .. queue, 0, 0, 'WITHSCORES')
if #delayed > 0 and (earliest == nil or tonumber(delayed[2]) < earliest) then
    shown = delayed[2]
end
return shown
"""
)
