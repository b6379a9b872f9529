-- POST /v1/orders with an Idempotency-Key per request, of which 20 %
-- repeat a key sent earlier (one of this thread's last 1,000), with the
-- same body: the retries a real client makes. Keys are unique per thread
-- and per run (the run's nonce comes from the environment).

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("id", thread_count)
end

local sent = 0
local recent = {}
local ring = 1000
local prefix

function init(args)
  prefix = (os.getenv("IDEM_RUN") or "run") .. "-" .. id .. "-"
  math.randomseed(id * 7919 + #prefix)
end

local function order(key)
  local body = '{"item": "' .. key .. '", "quantity": 1}'
  return wrk.format("POST", "/v1/orders", {
    ["Idempotency-Key"] = key,
    ["X-Tenant"] = "bench",
    ["Content-Type"] = "application/json",
  }, body)
end

function request()
  if sent > 0 and math.random() < 0.2 then
    return order(recent[math.random(math.min(sent, ring))])
  end
  sent = sent + 1
  local key = prefix .. sent
  recent[(sent - 1) % ring + 1] = key
  return order(key)
end
