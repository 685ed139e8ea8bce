// chart-render renders a Helm v3 chart the way `helm template --show-only` does, for
// machines without a Helm binary: the same engine (Go's text/template with the sprig
// function library and Helm's own include, tpl, required, toYaml, fromYaml and lookup) and
// the same output layout ("---" and "# Source: <chart>/templates/<file>" before each
// document, documents of a file in Helm's install order). It covers what the kubesched
// chart uses: no subcharts, no Files, lookup answers nothing (as `helm template` does).
//
// Usage:
//
//	chart-render CHART_DIR --release NAME --namespace NS --kube-version vX.Y.Z \
//	    [-f VALUES.yaml]... [--set a.b=c]... --show-only templates/FILE...
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/ghodss/yaml"
)

type options struct {
	chart, release, namespace, kubeVersion string
	valueFiles, sets, showOnly             []string
}

func parseArgs(args []string) (options, error) {
	o := options{release: "release-name", namespace: "default", kubeVersion: "v1.20.0"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		takes := map[string]*string{"--release": &o.release, "--namespace": &o.namespace, "--kube-version": &o.kubeVersion}
		lists := map[string]*[]string{"-f": &o.valueFiles, "--values": &o.valueFiles, "--set": &o.sets, "--show-only": &o.showOnly}
		if p, ok := takes[a]; ok {
			if i+1 >= len(args) {
				return o, fmt.Errorf("%s needs a value", a)
			}
			i++
			*p = args[i]
		} else if p, ok := lists[a]; ok {
			if i+1 >= len(args) {
				return o, fmt.Errorf("%s needs a value", a)
			}
			i++
			*p = append(*p, args[i])
		} else if strings.HasPrefix(a, "-") {
			return o, fmt.Errorf("unknown flag %s", a)
		} else if o.chart == "" {
			o.chart = a
		} else {
			return o, fmt.Errorf("one chart only (got %s and %s)", o.chart, a)
		}
	}
	if o.chart == "" {
		return o, errors.New("usage: chart-render CHART_DIR [--release NAME] [--namespace NS] [--kube-version V] [-f FILE]... [--set K=V]... [--show-only templates/FILE]...")
	}
	return o, nil
}

func readYAML(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// merge puts src over dst: maps merge key by key, anything else is replaced (Helm's rule).
func merge(dst, src map[string]interface{}) {
	for k, v := range src {
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			merge(dm, sm)
		} else {
			dst[k] = v
		}
	}
}

// setValue applies one `--set a.b.c=v`: true/false, integers and null are typed, the rest
// is a string (Helm's --set typing for scalars; lists and escapes are not needed here).
func setValue(values map[string]interface{}, assignment string) error {
	key, raw, ok := strings.Cut(assignment, "=")
	if !ok || key == "" {
		return fmt.Errorf("--set %q: want KEY=VALUE", assignment)
	}
	var v interface{} = raw
	switch {
	case raw == "true" || raw == "false":
		v = raw == "true"
	case raw == "null":
		v = nil
	default:
		if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
			v = n
		}
	}
	parts := strings.Split(key, ".")
	m := values
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
	return nil
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

// installOrder is Helm's kind order for installing (and printing) manifests.
var installOrder = []string{"Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
	"PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
	"ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
	"CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
	"ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
	"DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
	"HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
	"APIService"}

func kindRank(doc string) int {
	var head struct {
		Kind string `json:"kind"`
	}
	if err := yaml.Unmarshal([]byte(doc), &head); err == nil {
		for i, k := range installOrder {
			if k == head.Kind {
				return i
			}
		}
	}
	return len(installOrder)
}

var docSeparator = regexp.MustCompile(`(?:^|\s*\n)---\s*`)

func run(o options) (string, error) {
	chartMeta, err := readYAML(filepath.Join(o.chart, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	name, _ := chartMeta["name"].(string)
	if name == "" {
		return "", errors.New("Chart.yaml has no name")
	}
	values, err := readYAML(filepath.Join(o.chart, "values.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range o.valueFiles {
		extra, err := readYAML(f)
		if err != nil {
			return "", err
		}
		merge(values, extra)
	}
	for _, s := range o.sets {
		if err := setValue(values, s); err != nil {
			return "", err
		}
	}
	chart := map[string]interface{}{}
	for k, v := range chartMeta {
		chart[strings.ToUpper(k[:1])+k[1:]] = v
	}
	version := strings.TrimPrefix(o.kubeVersion, "v")
	major, minor, _ := strings.Cut(strings.SplitN(version, "-", 2)[0], ".")
	minor, _, _ = strings.Cut(minor, ".")
	top := map[string]interface{}{
		"Values":  values,
		"Chart":   chart,
		"Release": map[string]interface{}{"Name": o.release, "Namespace": o.namespace, "Service": "Helm", "IsInstall": true, "IsUpgrade": false, "Revision": 1},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{"Version": "v" + version, "GitVersion": "v" + version, "Major": major, "Minor": minor},
		},
	}

	base := name + "/templates"
	t := template.New("gotpl").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	funcs["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		c, err := t.Clone()
		if err != nil {
			return "", err
		}
		if _, err := c.New("tpl").Parse(text); err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = c.ExecuteTemplate(&buf, "tpl", data)
		return strings.ReplaceAll(buf.String(), "<no value>", ""), err
	}
	t.Funcs(funcs)

	files, err := filepath.Glob(filepath.Join(o.chart, "templates", "*"))
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	var names []string
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		tname := base + "/" + filepath.Base(f)
		if _, err := t.New(tname).Parse(string(text)); err != nil {
			return "", err
		}
		if b := filepath.Base(f); !strings.HasPrefix(b, "_") && strings.HasSuffix(b, ".yaml") {
			names = append(names, tname)
		}
	}
	shown := names
	if len(o.showOnly) > 0 {
		shown = nil
		for _, s := range o.showOnly {
			full := name + "/" + s
			found := false
			for _, n := range names {
				found = found || n == full
			}
			if !found {
				return "", fmt.Errorf("could not find template %s in chart", s)
			}
			shown = append(shown, full)
		}
	}

	var out strings.Builder
	for _, tname := range shown {
		data := map[string]interface{}{}
		for k, v := range top {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{"Name": tname, "BasePath": base}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, tname, data); err != nil {
			return "", err
		}
		rendered := strings.ReplaceAll(buf.String(), "<no value>", "")
		var docs []string
		for _, d := range docSeparator.Split("\n"+rendered, -1) {
			if d = strings.TrimSpace(d); d != "" {
				docs = append(docs, d)
			}
		}
		ranks := make([]int, len(docs))
		order := make([]int, len(docs))
		for i, d := range docs {
			ranks[i], order[i] = kindRank(d), i
		}
		sort.SliceStable(order, func(a, b int) bool { return ranks[order[a]] < ranks[order[b]] })
		for _, i := range order {
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", tname, docs[i])
		}
	}
	return out.String(), nil
}

func main() {
	o, err := parseArgs(os.Args[1:])
	if err == nil {
		var text string
		if text, err = run(o); err == nil {
			_, err = os.Stdout.WriteString(text)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chart-render:", err)
		os.Exit(1)
	}
}
