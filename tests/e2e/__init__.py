"""The e2e tier: netpol-guard against a real etcd + kube-apiserver (see controlplane.py, cluster.py)."""
