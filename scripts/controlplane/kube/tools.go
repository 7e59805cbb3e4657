//go:build tools

// Package tools pins the Kubernetes programs the e2e tier runs: go.mod records their module
// versions and build.sh builds them with `go build k8s.io/kubernetes/cmd/...`.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
