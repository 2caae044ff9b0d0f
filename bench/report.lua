-- wrk script: after the run, write the figures the bench needs as key=value lines to
-- the file named by $WRK_REPORT (wrk's own --latency text goes to stdout as usual).
-- Latencies are in microseconds.
function done(summary, latency, requests)
  local path = os.getenv("WRK_REPORT")
  if path == nil or path == "" then return end
  local f = assert(io.open(path, "w"))
  local secs = summary.duration / 1e6
  local e = summary.errors
  f:write(string.format("requests=%d\n", summary.requests))
  f:write(string.format("duration_s=%.3f\n", secs))
  f:write(string.format("rps=%.1f\n", summary.requests / secs))
  f:write(string.format("lat_mean_us=%.1f\n", latency.mean))
  f:write(string.format("lat_p50_us=%d\n", latency:percentile(50)))
  f:write(string.format("lat_p90_us=%d\n", latency:percentile(90)))
  f:write(string.format("lat_p99_us=%d\n", latency:percentile(99)))
  f:write(string.format("lat_p999_us=%d\n", latency:percentile(99.9)))
  f:write(string.format("lat_max_us=%d\n", latency.max))
  f:write(string.format("err_connect=%d\nerr_read=%d\nerr_write=%d\nerr_status=%d\nerr_timeout=%d\n",
                        e.connect, e.read, e.write, e.status, e.timeout))
  f:close()
end
