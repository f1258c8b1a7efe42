// Command kubeletserving runs the kubelet's own serving-certificate manager for one node and
// exits once it holds a certificate: the requests kucero's signer must approve are made by the
// same code a kubelet with serverTLSBootstrap: true runs, not by a Python imitation.
//
//	kubeletserving --kubeconfig node.kubeconfig --node-name n1 \
//	    --address InternalIP=10.0.0.1 --address Hostname=n1 --cert-dir DIR [--key ecdsa|rsa]
//
// --key ecdsa (the default) is k8s.io/kubernetes/pkg/kubelet/certificate's
// NewKubeletServerCertificateManager exactly as the kubelet calls it; that manager always
// generates an ECDSA P-256 key. --key rsa runs the client-go certificate manager it is built on
// with the kubelet's signer name and usage function but an RSA-2048 key (GenerateKey), the key
// type other clients of the same manager use. Exit 0 with the certificate file's path on stdout,
// 1 when no certificate arrived within --timeout.
package main

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/certificate"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletcert "k8s.io/kubernetes/pkg/kubelet/certificate"
)

type addressFlags []v1.NodeAddress

func (a *addressFlags) String() string { return fmt.Sprint(*a) }

func (a *addressFlags) Set(value string) error {
	kind, address, ok := strings.Cut(value, "=")
	if !ok {
		return fmt.Errorf("want TYPE=ADDRESS, got %q", value)
	}
	*a = append(*a, v1.NodeAddress{Type: v1.NodeAddressType(kind), Address: address})
	return nil
}

func main() {
	var addresses addressFlags
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the node user (system:node:<name>)")
	nodeName := flag.String("node-name", "", "the node's name")
	certDir := flag.String("cert-dir", "", "where the manager stores kubelet-server-current.pem")
	key := flag.String("key", "ecdsa", "ecdsa (the kubelet's own manager) or rsa")
	timeout := flag.Duration("timeout", 60*time.Second, "give up after this long")
	flag.Var(&addresses, "address", "TYPE=ADDRESS of the node (repeatable)")
	flag.Parse()
	if *kubeconfig == "" || *nodeName == "" || *certDir == "" {
		fmt.Fprintln(os.Stderr, "--kubeconfig, --node-name and --cert-dir are required")
		os.Exit(2)
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	check(err)
	client, err := clientset.NewForConfig(config)
	check(err)
	getAddresses := func() []v1.NodeAddress { return addresses }

	var manager certificate.Manager
	switch *key {
	case "ecdsa":
		manager, err = kubeletcert.NewKubeletServerCertificateManager(
			client, &kubeletconfig.KubeletConfiguration{}, types.NodeName(*nodeName), getAddresses, *certDir)
	case "rsa":
		manager, err = rsaManager(client, *nodeName, addresses, *certDir)
	default:
		err = fmt.Errorf("--key must be ecdsa or rsa, not %q", *key)
	}
	check(err)
	manager.Start()
	defer manager.Stop()

	deadline := time.Now().Add(*timeout)
	for time.Now().Before(deadline) {
		if current := manager.Current(); current != nil && current.Leaf != nil {
			fmt.Println(filepath.Join(*certDir, "kubelet-server-current.pem"))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "no serving certificate within %s\n", *timeout)
	os.Exit(1)
}

// rsaManager is the manager NewKubeletServerCertificateManager builds, with an RSA key: same
// signer, same usage function (which adds key encipherment for RSA), the kubelet's template
// (CN=system:node:<name>, O=system:nodes, DNS names from Hostname/*DNS, IPs from *IP).
func rsaManager(client clientset.Interface, node string, addresses []v1.NodeAddress, dir string) (certificate.Manager, error) {
	store, err := certificate.NewFileStore("kubelet-server", dir, dir, "", "")
	if err != nil {
		return nil, err
	}
	var dnsNames []string
	var ips []net.IP
	for _, a := range addresses {
		switch a.Type {
		case v1.NodeHostName, v1.NodeInternalDNS, v1.NodeExternalDNS:
			dnsNames = append(dnsNames, a.Address)
		case v1.NodeInternalIP, v1.NodeExternalIP:
			if ip := net.ParseIP(a.Address); ip != nil {
				ips = append(ips, ip)
			}
		}
	}
	sort.Strings(dnsNames)
	return certificate.NewManager(&certificate.Config{
		ClientsetFn: func(*tls.Certificate) (clientset.Interface, error) { return client, nil },
		GetTemplate: func() *x509.CertificateRequest {
			return &x509.CertificateRequest{
				Subject:     pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
				DNSNames:    dnsNames,
				IPAddresses: ips,
			}
		},
		SignerName:       certificatesv1.KubeletServingSignerName,
		GetUsages:        certificate.DefaultKubeletServingGetUsages,
		CertificateStore: store,
		GenerateKey:      func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) },
	})
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
