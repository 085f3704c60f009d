"""Standing nodes: one long-lived node per party; tasks are proposed, approved by each
party's policy, run on real peers, traced and collected peer to peer (no coordinator).

Modules: `signing` (Ed25519 keys and signed events), `spec` (task specs), `catalog`
(named local datasets and their schemas), `policy` (what a party accepts), `lifecycle`
(a task's status derived from its events, sans-I/O), `channel` (reliable in-order delivery
between two nodes, sans-I/O), `messages` (bounded JSON codec), `transport` (CURVE ZeroMQ
driver), `store` (SQLite), `runner` (this party's peer process for a run), `service` (the
node), `api` (local HTTP JSON API and dashboard), `client` (`ringfl.Node`).
Design and file formats: docs/nodes.md.
"""
