//go:build tools

// Package tools pins what this module exists to build: kubeadm, and the kubelet packages
// kubeletbootstrap (a symlink to ../../k8s/kubeletbootstrap, which go mod tidy does not follow)
// imports. The build tag keeps it out of every build; matrix.sh builds the packages directly.
package tools

import (
	_ "k8s.io/apiserver/pkg/util/feature"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	_ "k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap"
	_ "k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	_ "k8s.io/kubernetes/pkg/util/filesystem"
)
