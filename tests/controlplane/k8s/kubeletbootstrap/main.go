// Command kubeletbootstrap is the kubelet's start-up, as far as its certificates go, for the
// version matrix (tests/integration/test_kubeadm_matrix.py): the kubelet's own code of the
// Kubernetes minor it is built with, not a Python imitation. It chroots into a node tree first
// (as `kubeadm --rootfs` does), so every path it reads and writes is the kubelet's real one.
//
//	kubeletbootstrap --root TREE --node-name NAME [--timeout 2m]
//	kubeletbootstrap --root TREE --node-name NAME --check [--whoami]
//
// Bootstrap (the default) is what a kubelet started by `kubeadm join` does: until
// pkg/kubelet/certificate/bootstrap.LoadClientCert succeeds (the kubelet's systemd unit restarts
// it every few seconds, so a kubeconfig join has not finished writing is only a retry), call it
// with the paths of kubeadm's kubelet drop-in: a CSR for system:node:NAME with the bootstrap
// token of /etc/kubernetes/bootstrap-kubelet.conf, the certificate in
// /var/lib/kubelet/pki/kubelet-client-current.pem and /etc/kubernetes/kubelet.conf pointing at it.
//
// --check is the kubelet's verdict on a tree someone else changed: LoadClientCert with no
// bootstrap kubeconfig (it only succeeds when kubelet.conf is valid and unexpired), the client
// certificate store's current pair if there is one (a control-plane node made by `kubeadm init`
// without a running kubelet has none: kubelet.conf embeds its first certificate), and
// /var/lib/kubelet/config.yaml through the kubelet's own loader and validation (less the
// cgroup v1 check, which is about the machine). --whoami adds the store as required and one
// authenticated request (SelfSubjectReview) with kubelet.conf that must come back as
// system:node:NAME in system:nodes. Exit 0 and one line of JSON on stdout, or 1 with the reason
// on stderr.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/certificate"
	"k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	"k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"
)

// The kubelet's paths as kubeadm's systemd drop-in (10-kubeadm.conf) and defaults set them.
const (
	kubeconfigPath = "/etc/kubernetes/kubelet.conf"
	bootstrapPath  = "/etc/kubernetes/bootstrap-kubelet.conf"
	certDir        = "/var/lib/kubelet/pki"
	configPath     = "/var/lib/kubelet/config.yaml"
)

func main() {
	root := flag.String("root", "", "the node tree to chroot into")
	nodeName := flag.String("node-name", "", "the node's name")
	checkOnly := flag.Bool("check", false, "read the tree as a restarting kubelet would; bootstrap nothing")
	whoami := flag.Bool("whoami", false, "with --check: authenticate with kubelet.conf")
	timeout := flag.Duration("timeout", 2*time.Minute, "give up after this long")
	flag.Parse()
	if *root == "" || *nodeName == "" {
		fmt.Fprintln(os.Stderr, "--root and --node-name are required")
		os.Exit(2)
	}
	must(syscall.Chroot(*root))
	must(os.Chdir("/"))
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if *checkOnly {
		must(check(ctx, *nodeName, *whoami))
		return
	}
	must(bootstrapUntilDone(ctx, types.NodeName(*nodeName)))
}

// bootstrapUntilDone calls LoadClientCert until it succeeds, as systemd restarts a kubelet that
// exited, or until ctx ends (then with the last error).
func bootstrapUntilDone(ctx context.Context, nodeName types.NodeName) error {
	for {
		err := bootstrap.LoadClientCert(ctx, kubeconfigPath, bootstrapPath, certDir, nodeName)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no client certificate: %w (last: %v)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func check(ctx context.Context, nodeName string, whoami bool) error {
	if _, err := os.Stat(bootstrapPath); err == nil {
		return fmt.Errorf("%s exists: LoadClientCert could bootstrap a new certificate instead of reading %s", bootstrapPath, kubeconfigPath)
	}
	if err := bootstrap.LoadClientCert(ctx, kubeconfigPath, bootstrapPath, certDir, types.NodeName(nodeName)); err != nil {
		return fmt.Errorf("the kubelet would not start with %s: %w", kubeconfigPath, err)
	}
	store, err := certificate.NewFileStore("kubelet-client", certDir, certDir, "", "")
	if err != nil {
		return err
	}
	report := map[string]any{}
	current, err := store.Current()
	switch {
	case err == nil:
		report["clientCertificateCurrent"] = store.CurrentPath()
		report["clientNotAfter"] = current.Leaf.NotAfter.UTC().Format(time.RFC3339)
	case whoami:
		return fmt.Errorf("the kubelet's client certificate store: %w", err)
	}
	loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, configPath)
	if err != nil {
		return err
	}
	config, err := loader.Load(ctx)
	if err != nil {
		return fmt.Errorf("the kubelet's loader on %s: %w", configPath, err)
	}
	// Validated as the kubelet does, but for failCgroupV1 (true by default since v1.35): that
	// check reads the host the tests run on (its /sys/fs/cgroup), not the file.
	validated := *config
	validated.FailCgroupV1 = false
	if err := validation.ValidateKubeletConfiguration(&validated, utilfeature.DefaultFeatureGate); err != nil {
		return fmt.Errorf("the kubelet's validation of %s: %w", configPath, err)
	}
	report["rotateCertificates"] = config.RotateCertificates
	report["serverTLSBootstrap"] = config.ServerTLSBootstrap
	if whoami {
		username, err := whoAmI(ctx, nodeName)
		if err != nil {
			return err
		}
		report["username"] = username
	}
	return json.NewEncoder(os.Stdout).Encode(report)
}

// whoAmI makes one request with kubelet.conf; it must authenticate as the node.
func whoAmI(ctx context.Context, nodeName string) (string, error) {
	restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfigPath)
	if err != nil {
		return "", err
	}
	client, err := clientset.NewForConfig(restConfig)
	if err != nil {
		return "", err
	}
	review, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("a request with %s: %w", kubeconfigPath, err)
	}
	user := review.Status.UserInfo
	if user.Username != "system:node:"+nodeName || !slices.Contains(user.Groups, "system:nodes") {
		return "", fmt.Errorf("%s authenticates as %q %v, not system:node:%s", kubeconfigPath, user.Username, user.Groups, nodeName)
	}
	return user.Username, nil
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
