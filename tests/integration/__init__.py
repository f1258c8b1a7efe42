"""Tests against the real kube-apiserver, etcd and kubeadm (tests/controlplane)."""
