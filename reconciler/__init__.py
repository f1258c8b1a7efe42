"""kucero: keeps a kubeadm cluster's control-plane certificates from expiring."""

__version__ = "0.2.0"
