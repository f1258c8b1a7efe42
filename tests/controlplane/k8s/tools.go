//go:build tools

// Package tools pins the Kubernetes main packages this module exists to build. The build tag
// keeps it out of every build; build.sh builds the cmd/ packages directly.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
