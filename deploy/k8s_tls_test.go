// Tests of the TLS overlay as kustomize renders it: the qemu-nbd TLS flags name objects that
// exist, the credentials directory is a read-only, group-readable Secret mount holding QEMU's
// file names, the authz list comes from a ConfigMap key in QEMU's format, the metrics web
// config is mounted from a Secret, and the probes and scrape annotation speak HTTPS.
package deploy

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// mountOf returns the volume mounted at dir in the container (nil if none) and whether the
// mount is read-only.
func mountOf(pod, ctr map[string]any, dir string) (map[string]any, bool) {
	for _, vm := range list(ctr, "volumeMounts") {
		if str(vm, "mountPath") != dir {
			continue
		}
		ro, _ := vm.(map[string]any)["readOnly"].(bool)
		for _, v := range list(pod, "spec", "volumes") {
			if str(v, "name") == str(vm, "name") {
				return v.(map[string]any), ro
			}
		}
	}
	return nil, false
}

// secretFiles returns the file names a Secret or ConfigMap volume shows (its items' paths;
// nil without items, meaning every key) and its defaultMode.
func secretFiles(src map[string]any) ([]string, int) {
	var files []string
	for _, it := range list(src, "items") {
		files = append(files, str(it, "path"))
	}
	mode := 0o644 // Kubernetes' default
	if m, ok := src["defaultMode"]; ok {
		mode = num(m)
	}
	return files, mode
}

// checkTLSOverlay returns every problem of the rendered TLS overlay.
func checkTLSOverlay(ms manifests) []string {
	var probs []string
	bad := func(f string, a ...any) { probs = append(probs, fmt.Sprintf(f, a...)) }
	sts := ms.find("StatefulSet", "qnbd")
	if sts == nil {
		return []string{"no StatefulSet qnbd"}
	}
	pod := obj(sts, "spec", "template")
	var ctr map[string]any
	for _, c := range list(pod, "spec", "containers") {
		if str(c, "name") == "qnbd" {
			ctr = c.(map[string]any)
		}
	}
	var args []string
	for _, a := range list(ctr, "args") {
		s, _ := a.(string)
		args = append(args, s)
	}
	a := parseTLSArgs(args)
	probs = append(probs, tlsArgsProblems(a)...)

	// Credentials: a read-only Secret volume with QEMU's names, not readable by others.
	credsDir := a.objects[a.tlsCreds]["dir"]
	vol, ro := mountOf(pod, ctr, credsDir)
	switch {
	case vol == nil || obj(vol, "secret") == nil:
		bad("tls-creds-x509 dir=%s is not a Secret mount", credsDir)
	default:
		files, mode := secretFiles(obj(vol, "secret"))
		for _, want := range []string{"ca-cert.pem", "server-cert.pem", "server-key.pem"} {
			found := false
			for _, f := range files {
				found = found || f == want
			}
			if !found {
				bad("Secret volume %s does not provide %s (items %v)", str(vol, "name"), want, files)
			}
		}
		if mode&0o137 != 0 {
			bad("Secret volume %s defaultMode %#o: keys must be owner/group-read only", str(vol, "name"), mode)
		}
		if !ro {
			bad("credentials mount %s is not readOnly", credsDir)
		}
	}

	// The authz list: a ConfigMap key of this overlay, in QEMU's format.
	listFile := a.objects[a.tlsAuthz]["filename"]
	vol, _ = mountOf(pod, ctr, filepath.Dir(listFile))
	if cm := obj(vol, "configMap"); cm == nil {
		bad("authz-list-file %s is not in a ConfigMap mount", listFile)
	} else if doc := ms.find("ConfigMap", str(cm, "name")); doc == nil {
		bad("ConfigMap %s is not in the overlay", str(cm, "name"))
	} else if data := str(doc, "data", filepath.Base(listFile)); data == "" {
		bad("ConfigMap %s has no key %s", str(cm, "name"), filepath.Base(listFile))
	} else {
		for _, p := range authzProblems([]byte(data)) {
			bad("ConfigMap %s: %s", str(cm, "name"), p)
		}
	}

	// The metrics web config: a Secret mount too (it may carry password hashes).
	vol, ro = mountOf(pod, ctr, filepath.Dir(a.webConfig))
	if vol == nil || obj(vol, "secret") == nil || !ro {
		bad("--metrics-web-config %s is not in a read-only Secret mount", a.webConfig)
	} else if _, mode := secretFiles(obj(vol, "secret")); mode&0o137 != 0 {
		bad("web config Secret defaultMode %#o is too open", mode)
	}

	// Probes and annotation-based scrapes over HTTPS.
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if s := str(ctr, probe, "httpGet", "scheme"); s != "HTTPS" {
			bad("%s scheme %q, want HTTPS", probe, s)
		}
	}
	if s := str(pod, "metadata", "annotations", "prometheus.io/scheme"); s != "https" {
		bad("prometheus.io/scheme annotation %q, want https", s)
	}
	return probs
}

func TestTLSOverlay(t *testing.T) {
	for _, p := range checkTLSOverlay(kustomize(t, "k8s/tls")) {
		t.Error(p)
	}
	// The base serves plaintext: the checks must see that.
	if len(checkTLSOverlay(kustomize(t, "k8s"))) == 0 {
		t.Error("the plaintext base passes the TLS checks")
	}
}

// TestTLSOverlayChecksCanFail breaks the rendered overlay in several ways.
func TestTLSOverlayChecksCanFail(t *testing.T) {
	container := func(ms manifests) map[string]any {
		return list(ms.find("StatefulSet", "qnbd"), "spec", "template", "spec", "containers")[0].(map[string]any)
	}
	volume := func(ms manifests, name string) map[string]any {
		for _, v := range list(ms.find("StatefulSet", "qnbd"), "spec", "template", "spec", "volumes") {
			if str(v, "name") == name {
				return v.(map[string]any)
			}
		}
		t.Fatalf("no volume %s", name)
		return nil
	}
	editArgs := func(ms manifests, from, to string) {
		args := list(container(ms), "args")
		for i, a := range args {
			args[i] = strings.Replace(a.(string), from, to, 1)
		}
	}
	for name, mutate := range map[string]func(ms manifests){
		"key world-readable": func(ms manifests) { obj(volume(ms, "tls"), "secret")["defaultMode"] = float64(0o444) },
		"key file not mapped": func(ms manifests) {
			list(obj(volume(ms, "tls"), "secret"), "items")[2].(map[string]any)["path"] = "key.pem"
		},
		"creds dir moved":   func(ms manifests) { editArgs(ms, "dir=/etc/qnbd/tls", "dir=/etc/pki/qnbd") },
		"authz key renamed": func(ms manifests) { editArgs(ms, "authz.json", "acl.json") },
		"authz allows all": func(ms manifests) {
			cm := ms.find("ConfigMap", "qnbd-authz")
			d := obj(cm, "data")
			d["authz.json"] = strings.Replace(d["authz.json"].(string), `"policy": "deny"`, `"policy": "allow"`, 1)
		},
		"web config writable": func(ms manifests) {
			for _, vm := range list(container(ms), "volumeMounts") {
				if str(vm, "name") == "metrics-web" {
					vm.(map[string]any)["readOnly"] = false
				}
			}
		},
		"plain probe":      func(ms manifests) { obj(container(ms), "livenessProbe", "httpGet")["scheme"] = "HTTP" },
		"no tls-creds":     func(ms manifests) { editArgs(ms, "--tls-creds=tls0", "--description=x") },
		"authz id differs": func(ms manifests) { editArgs(ms, "--tls-authz=authz0", "--tls-authz=authz1") },
	} {
		ms := kustomize(t, "k8s/tls")
		mutate(ms)
		if len(checkTLSOverlay(ms)) == 0 {
			t.Errorf("%s: not detected", name)
		}
	}
}
