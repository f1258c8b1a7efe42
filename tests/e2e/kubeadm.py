"""The kubeadm configuration of the e2e node (v1beta4), with its validity periods as parameters.

``certificate_validity`` is every leaf's life (default 48 h: well inside a policy's 720 h
``renewBefore``, so a first pass renews them all); ``ca_validity`` the CAs' (default kubeadm's
ten years; a CA-renewal test brings a node up with a short one). Everything else is what this
kind of machine needs (``tests/e2e/README.md``): images never pulled, cgroup v1 with the
cgroupfs driver, swap tolerated, no SystemVerification.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.e2e import images


@dataclasses.dataclass(frozen=True)
class Config:
    certificate_validity: str = "48h0m0s"
    ca_validity: str = "87600h0m0s"
    pod_subnet: str = "10.244.0.0/24"
    # etcd's client port, kube-controller-manager and kube-scheduler on the node's address
    # instead of kubeadm's 127.0.0.1: on a machine shared with the integration tests, their
    # stand-in components take 127.0.0.1:2379, 2380, 10257 and 10259 for seconds at a time,
    # and a component restarting then fails with `address already in use`. kucero reads
    # the addresses from the manifests' flags either way.
    own_address: bool = True

    def _ignored(self) -> str:
        # preflight tries these ports on every address; the node binds them on its own
        moved = ["Port-2379", "Port-2380", "Port-10257", "Port-10259"] if self.own_address else []
        return ", ".join(["SystemVerification", *moved])

    def _addresses(self, address: str) -> str:
        if not self.own_address:
            return ""
        client = f"https://{address}:2379"
        return f"""etcd:
  local:
    extraArgs:
      - {{name: listen-client-urls, value: "{client}"}}
      - {{name: advertise-client-urls, value: "{client}"}}
apiServer:
  extraArgs:
    - {{name: etcd-servers, value: "{client}"}}
controllerManager:
  extraArgs:
    - {{name: bind-address, value: "{address}"}}
scheduler:
  extraArgs:
    - {{name: bind-address, value: "{address}"}}
"""

    def render(self, name: str, address: str, socket: str) -> str:
        return f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: {address}
  bindPort: 6443
nodeRegistration:
  name: {name}
  criSocket: unix://{socket}
  imagePullPolicy: Never
  ignorePreflightErrors: [{self._ignored()}]
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {images.KUBERNETES_VERSION}
imageRepository: {images.REPOSITORY}
certificateValidityPeriod: {self.certificate_validity}
caCertificateValidityPeriod: {self.ca_validity}
networking:
  podSubnet: {self.pod_subnet}
{self._addresses(address)}---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
"""


def image_names(bin_dir: Path) -> list[str]:
    return images.kubeadm_images(bin_dir / "kubeadm")
