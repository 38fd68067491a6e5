-- upload-1mib: every request POSTs the same 1 MiB body (built once per wrk thread).
wrk.method = "POST"
wrk.body = string.rep("u", 1024 * 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
