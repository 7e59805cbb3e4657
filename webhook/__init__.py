"""netpol-guard: keeps Kubernetes NetworkPolicies correct.

Layers, imports flowing one way only:
    policy (pure semantics)  <-  rules (pure checks)  <-  edges: cli/commands, admission,
    cluster.live, isolation.
"""
__version__ = "0.1.0"
