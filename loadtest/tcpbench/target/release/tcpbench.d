/work/wt/l4/loadtest/tcpbench/target/release/tcpbench: /work/wt/l4/loadtest/tcpbench/src/main.rs
