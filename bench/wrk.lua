-- wrk script for bench/wrk.ts: wrk <url> -- <method> <request file> [content type] [header: value ...]
-- The file has one request a line, "path<TAB>hex body"; each thread pre-formats them all and
-- sends them in turn. done() prints one JSON line of figures.
-- No probe connection: wrk's default resolve() connects and closes once to test each address,
-- and `openssl ocsp` (3.0) then spins on that empty connection forever.
wrk.resolve = function(host, service)
  wrk.addrs = wrk.lookup(host, service)
end

local requests = {}
local n = 0
local i = 0

local function unhex(h)
  return (h:gsub("%x%x", function(cc) return string.char(tonumber(cc, 16)) end))
end

function init(args)
  local method, file, ctype = args[1], args[2], args[3]
  local extra = {}
  for k = 4, #args do
    local name, value = args[k]:match("^([^:]+):%s*(.*)$")
    if name then extra[name] = value end
  end
  for line in io.lines(file) do
    local path, hex = line:match("^([^\t]*)\t(%x*)$")
    if path then
      local headers = {}
      for name, value in pairs(extra) do headers[name] = value end
      local body = nil
      if hex ~= "" then
        body = unhex(hex)
        if ctype and ctype ~= "" then headers["Content-Type"] = ctype end
      end
      n = n + 1
      requests[n] = wrk.format(method, path, headers, body)
    end
  end
  if n == 0 then error("no requests in " .. file) end
end

function request()
  i = i % n + 1
  return requests[i]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format('{"wrk":1,"requests":%d,"duration_us":%d,"non2xx":%d,"socket":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
