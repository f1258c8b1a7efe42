// rulecheck checks the PrometheusRule objects in kustomize output the way `promtool check
// rules` checks a rule file: Prometheus's own rulefmt parses each rule group (PromQL
// expressions, `for` durations, label names, annotation templates). It prints one JSON
// object: the alerts found, the metric selectors of each expression (so the tests can compare
// them with the metrics kucero declares), and every error. Exit 1 when there are errors.
//
//	kubectl kustomize kustomize/overlays/custom | rulecheck -
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

type matcher struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

type alert struct {
	Name        string            `json:"name"`
	Expr        string            `json:"expr"`
	Selectors   [][]matcher       `json:"selectors"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

type report struct {
	Objects int      `json:"objects"`
	Alerts  []alert  `json:"alerts"`
	Errors  []string `json:"errors"`
}

func main() {
	var in io.Reader = os.Stdin
	if len(os.Args) > 1 && os.Args[1] != "-" {
		f, err := os.Open(os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer f.Close()
		in = f
	}
	out := check(in)
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	_ = enc.Encode(out)
	if len(out.Errors) > 0 || out.Objects == 0 {
		os.Exit(1)
	}
}

func check(in io.Reader) report {
	out := report{Alerts: []alert{}, Errors: []string{}}
	p := parser.NewParser(parser.Options{})
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	decoder := yaml.NewDecoder(in)
	for {
		var doc struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec yaml.Node `yaml:"spec"`
		}
		err := decoder.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			out.Errors = append(out.Errors, err.Error())
			return out
		}
		if doc.Kind != "PrometheusRule" {
			continue
		}
		out.Objects++
		var spec bytes.Buffer
		if err := yaml.NewEncoder(&spec).Encode(&doc.Spec); err != nil {
			out.Errors = append(out.Errors, err.Error())
			continue
		}
		// The spec of a PrometheusRule is a rule file: {groups: [...]}. Unknown fields are
		// errors, as in promtool.
		groups, errs := rulefmt.Parse(spec.Bytes(), false, model.UTF8Validation, p, logger)
		for _, e := range errs {
			out.Errors = append(out.Errors, fmt.Sprintf("PrometheusRule %s: %v", doc.Metadata.Name, e))
		}
		if groups == nil {
			continue
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				a := alert{Name: r.Alert, Expr: r.Expr, Labels: r.Labels, Annotations: r.Annotations}
				if r.Record != "" {
					a.Name = r.Record
				}
				expr, err := p.ParseExpr(r.Expr)
				if err != nil {
					continue // already reported by rulefmt
				}
				for _, sel := range parser.ExtractSelectors(expr) {
					ms := []matcher{}
					for _, m := range sel {
						ms = append(ms, matcher{m.Name, m.Type.String(), m.Value})
					}
					a.Selectors = append(a.Selectors, ms)
				}
				out.Alerts = append(out.Alerts, a)
			}
		}
	}
}
