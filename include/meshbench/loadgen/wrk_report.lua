-- meshbench: hands wrk's own measurements to meshbench.loadgen.wrk, which writes them as a
-- Fortio-shaped result. Nothing here changes what wrk measures, except that with
-- MESHBENCH_WRK_STATUS_CODES=counted a response() callback counts every status code.

local report_path = os.getenv("MESHBENCH_WRK_REPORT")
local count_codes = os.getenv("MESHBENCH_WRK_STATUS_CODES") == "counted"
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

if count_codes then
   -- A global, so done() can read each thread's copy with thread:get().
   status_counts = {}
   function response(status, headers, body)
      status_counts[status] = (status_counts[status] or 0) + 1
   end
end

local function integer(value)
   return string.format("%d", value)
end

function done(summary, latency, requests)
   local out = {}
   local function add(text) out[#out + 1] = text end
   add('{"duration_us":' .. integer(summary.duration))
   add(',"requests":' .. integer(summary.requests))
   add(',"bytes":' .. integer(summary.bytes))
   add(',"threads":' .. integer(#threads))
   local errors = summary.errors
   add(',"errors":{"connect":' .. integer(errors.connect) .. ',"read":' .. integer(errors.read)
       .. ',"write":' .. integer(errors.write) .. ',"status":' .. integer(errors.status)
       .. ',"timeout":' .. integer(errors.timeout) .. '}')
   -- Distinct latency values in microseconds, ascending, as wrk holds them (including the
   -- samples its coordinated-omission correction added; meshbench removes those).
   add(',"latency_us":[')
   for i = 1, #latency do
      local value, count = latency(i)
      if i > 1 then add(',') end
      add('[' .. integer(value) .. ',' .. integer(count) .. ']')
   end
   add(']')
   if count_codes then
      local totals = {}
      for _, thread in ipairs(threads) do
         local counts = thread:get("status_counts") or {}
         for status, count in pairs(counts) do
            totals[status] = (totals[status] or 0) + count
         end
      end
      add(',"status_counts":{')
      local first = true
      for status, count in pairs(totals) do
         if not first then add(',') end
         first = false
         add('"' .. integer(status) .. '":' .. integer(count))
      end
      add('}')
   end
   add('}\n')
   local file = assert(io.open(report_path, "w"))
   file:write(table.concat(out))
   file:close()
end
