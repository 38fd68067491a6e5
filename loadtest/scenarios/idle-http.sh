# Scenario: idle-http (sourced by run.sh; bash). idle-10k with 5,000 connections: RSS per idle
# keep-alive connection at a second size (fixed costs spread over fewer connections show).
IDLE_CONNS_FULL=5000
# shellcheck source=idle-10k.sh
source "$HERE/scenarios/idle-10k.sh"
