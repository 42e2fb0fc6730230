// Tests of the Kubernetes manifests: every document parses, kustomizations list real files,
// and names, ports, labels and probes agree across the StatefulSet, Services, NetworkPolicy,
// ServiceMonitor, PrometheusRule and Containerfile.
package deploy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// manifests is a set of parsed documents, by file or by the kustomization that rendered them.
type manifests map[string][]any

// find returns the one document of kind and name, or nil.
func (ms manifests) find(kind, name string) map[string]any {
	for _, docs := range ms {
		for _, d := range docs {
			if str(d, "kind") == kind && str(d, "metadata", "name") == name {
				return d.(map[string]any)
			}
		}
	}
	return nil
}

func (ms manifests) all(kind string) []map[string]any {
	var out []map[string]any
	for _, path := range sortedPaths(ms) {
		for _, d := range ms[path] {
			if str(d, "kind") == kind {
				out = append(out, d.(map[string]any))
			}
		}
	}
	return out
}

func sortedPaths(ms manifests) []string {
	var ps []string
	for p := range ms {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// subset reports whether every key=value of sel is in labels.
func subset(sel, labels map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func num(v any) int {
	switch x := v.(type) {
	case float64:
		return int(x)
	case string:
		n, _ := strconv.Atoi(x)
		return n
	}
	return 0
}

// bytesOf parses Kubernetes (Mi, Gi) and Go GOMEMLIMIT (MiB, GiB) sizes.
func bytesOf(s string) int64 {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			n, err := strconv.ParseInt(strings.TrimSuffix(s, u.suffix), 10, 64)
			if err != nil {
				return -1
			}
			return n * u.mult
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// checkManifests returns every disagreement found; rules is the parsed qnbd-rules.yml and
// exposed the Containerfile's EXPOSE ports.
func checkManifests(ms manifests, rules any, exposed []int) []string {
	var probs []string
	bad := func(f string, a ...any) { probs = append(probs, fmt.Sprintf(f, a...)) }

	for _, path := range sortedPaths(ms) {
		for i, d := range ms[path] {
			if d == nil {
				bad("%s: document %d is empty", path, i)
				continue
			}
			if str(d, "kind") == "Kustomization" {
				continue
			}
			if str(d, "apiVersion") == "" || str(d, "kind") == "" || str(d, "metadata", "name") == "" {
				bad("%s: document %d lacks apiVersion, kind or metadata.name", path, i)
			}
		}
	}

	sts := ms.find("StatefulSet", "qnbd")
	if sts == nil {
		return append(probs, "no StatefulSet qnbd")
	}
	pod := obj(sts, "spec", "template")
	podLabels := obj(pod, "metadata", "labels")
	if n := num(obj(sts, "spec")["replicas"]); n != 1 {
		bad("StatefulSet replicas = %d, want 1 (one writer per image)", n)
	}
	if !subset(obj(sts, "spec", "selector", "matchLabels"), podLabels) {
		bad("StatefulSet selector does not match its pod labels")
	}
	if g := num(obj(pod, "spec")["terminationGracePeriodSeconds"]); g < 60 {
		bad("terminationGracePeriodSeconds = %d, too short to flush", g)
	}
	var ctr map[string]any
	for _, c := range list(pod, "spec", "containers") {
		if str(c, "name") == "qnbd" {
			ctr = c.(map[string]any)
		}
	}
	if ctr == nil {
		return append(probs, "no container qnbd in the StatefulSet")
	}
	ports := map[string]int{}
	for _, p := range list(ctr, "ports") {
		ports[str(p, "name")] = num(obj(p.(map[string]any))["containerPort"])
	}
	if ports["nbd"] == 0 || ports["metrics"] == 0 {
		bad("container ports %v lack nbd or metrics", ports)
	}

	// Args: -p is the NBD port, --metrics-addr the metrics port, the image under the PVC.
	var args []string
	for _, a := range list(ctr, "args") {
		s, _ := a.(string)
		args = append(args, s)
	}
	argPort, metricsPort := 0, 0
	for i, a := range args {
		if a == "-p" && i+1 < len(args) {
			argPort, _ = strconv.Atoi(args[i+1])
		}
		if v, ok := strings.CutPrefix(a, "--metrics-addr="); ok {
			_, p, err := net.SplitHostPort(v)
			if err != nil {
				bad("--metrics-addr=%s: %v", v, err)
			}
			metricsPort, _ = strconv.Atoi(p)
		}
	}
	if argPort != ports["nbd"] {
		bad("args -p %d, container port nbd %d", argPort, ports["nbd"])
	}
	if metricsPort != ports["metrics"] {
		bad("args --metrics-addr port %d, container port metrics %d", metricsPort, ports["metrics"])
	}
	claims := map[string]bool{}
	for _, vct := range list(sts, "spec", "volumeClaimTemplates") {
		claims[str(vct, "metadata", "name")] = true
	}
	imageOnClaim := false
	for _, vm := range list(ctr, "volumeMounts") {
		if claims[str(vm, "name")] && len(args) > 0 && strings.HasPrefix(args[len(args)-1], str(vm, "mountPath")+"/") {
			imageOnClaim = true
		}
	}
	if !imageOnClaim {
		bad("the image argument %v is not under a volumeClaimTemplate mount", args)
	}

	// Probes and scrape annotations on the metrics port.
	for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
		hg := obj(ctr, probe, "httpGet")
		if str(hg, "path") != path {
			bad("%s path %q, want %s", probe, str(hg, "path"), path)
		}
		if p := hg["port"]; p != "metrics" && num(p) != ports["metrics"] {
			bad("%s port %v is not the metrics port", probe, p)
		}
	}
	ann := obj(pod, "metadata", "annotations")
	if str(ann, "prometheus.io/scrape") != "true" || num(ann["prometheus.io/port"]) != ports["metrics"] ||
		str(ann, "prometheus.io/path") != "/metrics" {
		bad("pod scrape annotations %v disagree with the metrics port %d", ann, ports["metrics"])
	}

	// Security context and resources.
	psc, csc := obj(pod, "spec", "securityContext"), obj(ctr, "securityContext")
	if psc["runAsNonRoot"] != true || num(psc["runAsUser"]) == 0 || str(psc, "seccompProfile", "type") != "RuntimeDefault" {
		bad("pod securityContext %v is not non-root with RuntimeDefault seccomp", psc)
	}
	if csc["runAsNonRoot"] != true || csc["readOnlyRootFilesystem"] != true || csc["allowPrivilegeEscalation"] != false {
		bad("container securityContext %v: want runAsNonRoot, readOnlyRootFilesystem, no privilege escalation", csc)
	}
	if drop := list(csc, "capabilities", "drop"); len(drop) != 1 || drop[0] != "ALL" {
		bad("container capabilities drop %v, want [ALL]", drop)
	}
	res := obj(ctr, "resources")
	limit := bytesOf(str(res, "limits", "memory"))
	if str(res, "requests", "cpu") == "" || str(res, "requests", "memory") == "" || limit <= 0 {
		bad("resources %v need cpu and memory requests and a memory limit", res)
	}
	for _, e := range list(ctr, "env") {
		if str(e, "name") == "GOMEMLIMIT" {
			if v := bytesOf(str(e, "value")); v <= 0 || v >= limit {
				bad("GOMEMLIMIT %s must be below limits.memory %s", str(e, "value"), str(res, "limits", "memory"))
			}
		}
	}

	// Services select the pod and map onto named container ports.
	services := ms.all("Service")
	governing := ms.find("Service", str(sts, "spec", "serviceName"))
	if governing == nil || str(governing, "spec", "clusterIP") != "None" {
		bad("serviceName %q is not a headless Service", str(sts, "spec", "serviceName"))
	}
	for _, svc := range services {
		name := str(svc, "metadata", "name")
		if !subset(obj(svc, "spec", "selector"), podLabels) {
			bad("Service %s selector does not match the pod", name)
		}
		for _, p := range list(svc, "spec", "ports") {
			target, _ := p.(map[string]any)["targetPort"].(string)
			if _, ok := ports[target]; !ok || str(p, "name") != target {
				bad("Service %s port %s targets %q, not a container port of that name", name, str(p, "name"), target)
			}
			if num(p.(map[string]any)["port"]) != ports[target] {
				bad("Service %s port %s is %d, container port is %d", name, target, num(p.(map[string]any)["port"]), ports[target])
			}
		}
	}

	// The ServiceMonitor matches exactly one Service, and that Service has its port.
	for _, sm := range ms.all("ServiceMonitor") {
		matched := 0
		for _, svc := range services {
			if !subset(obj(sm, "spec", "selector", "matchLabels"), obj(svc, "metadata", "labels")) {
				continue
			}
			matched++
			for _, ep := range list(sm, "spec", "endpoints") {
				found := false
				for _, p := range list(svc, "spec", "ports") {
					found = found || str(p, "name") == str(ep, "port")
				}
				if !found {
					bad("ServiceMonitor endpoint port %q is not a port of Service %s", str(ep, "port"), str(svc, "metadata", "name"))
				}
				if str(ep, "path") != "/metrics" {
					bad("ServiceMonitor path %q", str(ep, "path"))
				}
			}
		}
		if matched != 1 {
			bad("ServiceMonitor %s matches %d Services, want 1", str(sm, "metadata", "name"), matched)
		}
	}

	// NetworkPolicies select the pod and open named ports that exist.
	for _, np := range ms.all("NetworkPolicy") {
		if !subset(obj(np, "spec", "podSelector", "matchLabels"), podLabels) {
			bad("NetworkPolicy %s does not select the pod", str(np, "metadata", "name"))
		}
		for _, in := range list(np, "spec", "ingress") {
			for _, p := range list(in, "ports") {
				if _, ok := ports[str(p, "port")]; !ok {
					bad("NetworkPolicy port %v is not a container port name", obj(p.(map[string]any))["port"])
				}
			}
		}
	}

	// A PrometheusRule carries exactly the rules of deploy/prometheus.
	prs := ms.all("PrometheusRule")
	if len(prs) > 1 {
		bad("want at most one PrometheusRule, have %d", len(prs))
	}
	for _, pr := range prs {
		if !reflect.DeepEqual(obj(pr, "spec"), rules) {
			bad("PrometheusRule spec differs from prometheus/qnbd-rules.yml")
		}
	}

	// The container image exposes the same ports.
	var want []int
	for _, p := range ports {
		want = append(want, p)
	}
	sort.Ints(want)
	sort.Ints(exposed)
	if !reflect.DeepEqual(want, exposed) {
		bad("Containerfile EXPOSE %v, StatefulSet ports %v", exposed, want)
	}
	return probs
}

func containerExposed(t *testing.T) []int {
	t.Helper()
	var out []int
	for _, l := range containerLines(t) {
		if rest, ok := strings.CutPrefix(l, "EXPOSE "); ok {
			for _, p := range strings.Fields(rest) {
				n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				if err != nil {
					t.Fatalf("EXPOSE %s: %v", p, err)
				}
				out = append(out, n)
			}
		}
	}
	return out
}

// TestManifestsAgree renders every kustomization and checks what it renders.
func TestManifestsAgree(t *testing.T) {
	rules := loadYAML(t, rulesFile)[rulesFile][0]
	exposed := containerExposed(t)
	for _, dir := range kustomizations {
		ms := kustomize(t, dir)
		for _, p := range checkManifests(ms, rules, exposed) {
			t.Errorf("%s: %s", dir, p)
		}
		if dir == "k8s/monitoring" && (len(ms.all("PrometheusRule")) != 1 || len(ms.all("ServiceMonitor")) != 1) {
			t.Errorf("%s: want one PrometheusRule and one ServiceMonitor", dir)
		}
	}
}

// TestManifestChecksCanFail breaks the manifests in a few ways and requires each to be
// caught.
func TestManifestChecksCanFail(t *testing.T) {
	rules := loadYAML(t, rulesFile)[rulesFile][0]
	exposed := containerExposed(t)
	mutations := map[string]func(ms manifests){
		"probe on an unknown port": func(ms manifests) {
			ctr := list(ms.find("StatefulSet", "qnbd"), "spec", "template", "spec", "containers")[0]
			obj(ctr, "readinessProbe", "httpGet")["port"] = "http"
		},
		"service port drift": func(ms manifests) {
			svc := ms.find("Service", "qnbd")
			list(svc, "spec", "ports")[0].(map[string]any)["port"] = 10810.0
		},
		"metrics-addr drift": func(ms manifests) {
			ctr := list(ms.find("StatefulSet", "qnbd"), "spec", "template", "spec", "containers")[0]
			args := list(ctr, "args")
			for i, a := range args {
				if strings.HasPrefix(a.(string), "--metrics-addr=") {
					args[i] = "--metrics-addr=0.0.0.0:9100"
				}
			}
		},
		"root filesystem writable": func(ms manifests) {
			ctr := list(ms.find("StatefulSet", "qnbd"), "spec", "template", "spec", "containers")[0]
			obj(ctr, "securityContext")["readOnlyRootFilesystem"] = false
		},
		"rule drift": func(ms manifests) {
			pr := ms.all("PrometheusRule")[0]
			rule := list(list(obj(pr, "spec"), "groups")[0], "rules")[0].(map[string]any)
			rule["expr"] = "up == 0"
		},
	}
	for name, mutate := range mutations {
		ms := kustomize(t, "k8s/monitoring")
		mutate(ms)
		if probs := checkManifests(ms, rules, exposed); len(probs) == 0 {
			t.Errorf("%s: not detected", name)
		}
	}
}

// TestKustomizations checks every resource and patch listed exists and every manifest is
// listed (kustomize itself does not mind an unlisted file).
func TestKustomizations(t *testing.T) {
	kfiles, err := filepath.Glob("k8s/*/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	kfiles = append([]string{"k8s/kustomization.yaml"}, kfiles...)
	docs := loadYAML(t, kfiles...)
	listed := map[string]bool{}
	for _, kf := range kfiles {
		k := docs[kf][0]
		if str(k, "kind") != "Kustomization" || !strings.HasPrefix(str(k, "apiVersion"), "kustomize.config.k8s.io/") {
			t.Errorf("%s is not a Kustomization", kf)
		}
		dir := filepath.Dir(kf)
		for _, p := range list(k, "patches") {
			path := filepath.Join(dir, str(p, "path"))
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: patch %v: %v", kf, p, err)
			}
			listed[path] = true
		}
		for _, r := range list(k, "resources") {
			path := filepath.Join(dir, r.(string))
			st, err := os.Stat(path)
			if err != nil {
				t.Errorf("%s: resource %s: %v", kf, r, err)
				continue
			}
			if st.IsDir() {
				if _, err := os.Stat(filepath.Join(path, "kustomization.yaml")); err != nil {
					t.Errorf("%s: resource %s is a directory without kustomization.yaml", kf, r)
				}
				continue
			}
			listed[path] = true
		}
	}
	all, _ := filepath.Glob("k8s/*.yaml")
	more, _ := filepath.Glob("k8s/*/*.yaml")
	for _, f := range append(all, more...) {
		if filepath.Base(f) != "kustomization.yaml" && !listed[f] {
			t.Errorf("%s is not listed in any kustomization", f)
		}
	}
	if len(kfiles) != len(kustomizations) {
		t.Errorf("kustomization files %v, but the tests render %v", kfiles, kustomizations)
	}
}
