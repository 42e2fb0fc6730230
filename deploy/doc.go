// Package deploy holds no code: it is the home of qnbd's deployment files and of the tests
// that keep them honest.
//
//	systemd/     qnbd@.service (hardened, one export per instance), qnbd@.socket (socket
//	             activation), a sysusers.d entry, example environment files, and the TLS
//	             drop-in qnbd@.service.d/tls.conf with its web config and authz list examples
//	container/   Containerfile (static CGO_ENABLED=0 build on distroless, non-root) and its
//	             build-context ignore file
//	k8s/         base/: StatefulSet + PVC, Services, NetworkPolicy (k8s/ itself applies it);
//	             monitoring/ adds a ServiceMonitor and the alert rules as a PrometheusRule; tls/
//	             serves NBD over TLS with client authorisation and metrics over HTTPS
//	prometheus/  alert rules and their promtool unit tests
//	grafana/     the qnbd dashboard
//
// The tests run the real validators where they exist (systemd-analyze verify and security,
// systemd-sysusers, promtool check/test rules, go build + file + ldd, kustomize's own engine
// for every kustomization, the metrics package's web config validation) and otherwise check
// structure and cross-file agreement: ports and names across the rendered manifests and the
// Containerfile, TLS flags against the mounts that hold their files, and every metric name in
// the rules and the dashboard against the catalogue of the metrics package, so neither can
// drift from the code. Plain YAML files are parsed with python3's yaml module (Debian
// python3-yaml); kustomizations are rendered with sigs.k8s.io/kustomize/api (krusty), a
// test-only dependency.
package deploy
