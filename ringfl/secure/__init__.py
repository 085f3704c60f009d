"""Secure aggregation: fixed point, keys, mask PRG, masking graph, Shamir shares, and the
masked ring all-reduce (`SecureRingAllReduce`). See docs/security.md."""
