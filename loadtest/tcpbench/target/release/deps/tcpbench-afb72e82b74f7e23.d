/work/wt/l4/loadtest/tcpbench/target/release/deps/tcpbench-afb72e82b74f7e23.d: src/main.rs

/work/wt/l4/loadtest/tcpbench/target/release/deps/tcpbench-afb72e82b74f7e23: src/main.rs

src/main.rs:
