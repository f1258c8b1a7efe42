"""A real Kubernetes control plane for the tests: kube-apiserver, etcd, kube-controller-manager
and kubeadm, built from the published Go modules (see build.sh) and started on loopback.

``python -m tests.controlplane start --dir DIR`` / ``stop --dir DIR`` for use by hand; the pytest
fixtures in tests/conftest.py use the same code.
"""
