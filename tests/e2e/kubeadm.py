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
  ignorePreflightErrors: [SystemVerification]
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {images.KUBERNETES_VERSION}
imageRepository: {images.REPOSITORY}
certificateValidityPeriod: {self.certificate_validity}
caCertificateValidityPeriod: {self.ca_validity}
networking:
  podSubnet: {self.pod_subnet}
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
"""


def image_names(bin_dir: Path) -> list[str]:
    return images.kubeadm_images(bin_dir / "kubeadm")
