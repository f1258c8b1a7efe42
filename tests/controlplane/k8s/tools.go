//go:build tools

// Package tools pins the Kubernetes main packages this module exists to build. The build tag
// keeps it out of every build; build.sh builds the cmd/ packages directly. kubelet and
// kube-scheduler are built only for the real-node tests (tests/e2e/build.sh).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
