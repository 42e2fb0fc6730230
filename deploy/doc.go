// Package deploy holds no code: it is the home of qnbd's deployment files and of the tests
// that keep them honest.
//
//	systemd/     qnbd@.service (hardened, one export per instance), qnbd@.socket (socket
//	             activation), a sysusers.d entry and an example environment file
//	container/   Containerfile (static CGO_ENABLED=0 build on distroless, non-root) and its
//	             build-context ignore file
//	k8s/         StatefulSet + PVC, Services, NetworkPolicy, kustomization; monitoring/ adds a
//	             ServiceMonitor and the alert rules as a PrometheusRule
//	prometheus/  alert rules and their promtool unit tests
//	grafana/     the qnbd dashboard
//
// The tests run the real validators where they exist (systemd-analyze verify and security,
// systemd-sysusers, promtool check/test rules, go build + file + ldd) and otherwise check
// structure and cross-file agreement: ports and names across the manifests and the
// Containerfile, and every metric name in the rules and the dashboard against the catalogue of
// the metrics package, so neither can drift from the code. YAML is parsed with python3's yaml
// module (Debian python3-yaml), which keeps a YAML library out of go.mod.
package deploy
