// fluxapply builds and applies a kustomize overlay the way Flux's kustomize-controller does,
// with Flux's own libraries: github.com/fluxcd/pkg/kustomize turns a Flux Kustomization
// object (kustomize.toolkit.fluxcd.io/v1) into a kustomization.yaml and builds it with
// SecureBuild (no remote bases, no file outside the source), and github.com/fluxcd/pkg/ssa
// applies the result in stages (CRDs and Namespaces first) with server-side apply under
// Flux's field manager, skipping objects that did not drift.
//
//	fluxapply -kubeconfig FILE -source DIR -kustomization FILE
//
// DIR is a copy of the repository (the generator may write into it, as kustomize-controller
// does in its artifact's temporary copy); FILE is the Flux Kustomization whose spec.path is
// relative to DIR. Prints a JSON list of {"subject", "action"}; exit 1 on any error.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/kustomize"
	"github.com/fluxcd/pkg/ssa"
	"github.com/fluxcd/pkg/ssa/utils"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

type entry struct {
	Subject string `json:"subject"`
	Action  string `json:"action"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster to apply to")
	source := flag.String("source", "", "the repository's directory (the Flux source artifact)")
	kustomization := flag.String("kustomization", "", "a Flux Kustomization YAML file")
	flag.Parse()
	entries, err := run(*kubeconfig, *source, *kustomization)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fluxapply:", err)
		os.Exit(1)
	}
	out, _ := json.MarshalIndent(entries, "", " ")
	fmt.Println(string(out))
}

func run(kubeconfig, source, kustomizationFile string) ([]entry, error) {
	raw, err := os.ReadFile(kustomizationFile)
	if err != nil {
		return nil, err
	}
	var ks unstructured.Unstructured
	if err := yaml.Unmarshal(raw, &ks.Object); err != nil {
		return nil, fmt.Errorf("%s: %w", kustomizationFile, err)
	}
	path, _, _ := unstructured.NestedString(ks.Object, "spec", "path")
	root, err := filepath.Abs(source)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, path)

	// What kustomize-controller does: generate, build securely, clean up.
	generator := kustomize.NewGenerator(root, ks)
	action, err := generator.WriteFile(dir, kustomize.WithSaveOriginalKustomization())
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	defer func() { _ = kustomize.CleanDirectory(dir, action) }()
	resources, err := kustomize.SecureBuild(root, dir, false)
	if err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	manifests, err := resources.AsYaml()
	if err != nil {
		return nil, err
	}
	objects, err := utils.ReadObjects(bytes.NewReader(manifests))
	if err != nil {
		return nil, err
	}

	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	kube, err := client.New(config, client.Options{})
	if err != nil {
		return nil, err
	}
	poller := polling.NewStatusPoller(kube, kube.RESTMapper(), polling.Options{})
	manager := ssa.NewResourceManager(kube, poller, ssa.Owner{
		Field: "kustomize-controller",
		Group: "kustomize.toolkit.fluxcd.io",
	})
	manager.SetOwnerLabels(objects, ks.GetName(), ks.GetNamespace())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	options := ssa.DefaultApplyOptions()
	changes, err := manager.ApplyAllStaged(ctx, objects, options)
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	entries := []entry{}
	for _, e := range changes.Entries {
		entries = append(entries, entry{Subject: e.Subject, Action: string(e.Action)})
	}
	return entries, nil
}
