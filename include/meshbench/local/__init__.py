"""The embedded local environment: two emulated clusters on this machine.

Two network namespaces joined by a veth pair (or, without root, two loopback addresses),
real nginx as the server workload, real data planes (direct, an Envoy mutual-TLS chain, a
WireGuard tunnel) and wrk as the load generator. See ``docs/local-environment.md``.
"""
