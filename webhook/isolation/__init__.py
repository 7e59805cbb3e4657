"""Namespace isolation: default-deny (and a DNS allowance) for namespaces labeled
`netpol-guard.io/isolate`. desired.py is pure; the controller and admission guards are edges."""
