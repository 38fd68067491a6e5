-- Appended by run.sh to every measured wrk run: wrk --latency prints p50..p99 only, and
-- rounded; this prints the percentiles the report uses, in microseconds, on one line.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "LT_RESULT p50_us=%d p90_us=%d p99_us=%d p999_us=%d requests=%d duration_us=%d " ..
    "connect=%d read=%d write=%d status=%d timeout=%d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout))
end
