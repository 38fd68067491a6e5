/work/wt/harness/loadtest/tcpbench/target/release/deps/tcpbench-afb72e82b74f7e23.d: src/main.rs src/ws.rs

/work/wt/harness/loadtest/tcpbench/target/release/deps/tcpbench-afb72e82b74f7e23: src/main.rs src/ws.rs

src/main.rs:
src/ws.rs:
