/work/wt/harness/loadtest/tcpbench/target/release/tcpbench: /work/wt/harness/loadtest/tcpbench/src/main.rs /work/wt/harness/loadtest/tcpbench/src/ws.rs
