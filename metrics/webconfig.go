// The web configuration file (--metrics-web-config): TLS, client certificates and basic auth
// for the HTTP endpoint, in the Prometheus exporter-toolkit format and served by that library
// (docs/metrics-web-config.md).
package metrics

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"

	"github.com/prometheus/exporter-toolkit/web"
)

// WebConfigFile is the path of an exporter-toolkit web configuration file; "" serves plain
// HTTP with no authentication.
type WebConfigFile string

// Validate reads the file and everything it names (certificate, key, client CA, bcrypt
// hashes) as the endpoint would, and returns nil if the endpoint could serve with it. The
// error is one line: the library's multi-line YAML errors are joined with "; ".
func (f WebConfigFile) Validate() error {
	if f == "" {
		return nil
	}
	if err := web.Validate(string(f)); err != nil {
		return fmt.Errorf("%s: %s", f, oneLine(err.Error()))
	}
	return nil
}

// serve runs srv on ln: through the exporter-toolkit when f is set (TLS and basic auth as the
// file says, re-read on every connection and request), else plain srv.Serve. Like
// http.Server.Serve it returns http.ErrServerClosed after a Shutdown.
func (f WebConfigFile) serve(srv *http.Server, ln net.Listener, logger *slog.Logger) error {
	if f == "" {
		return srv.Serve(ln)
	}
	path := string(f)
	return web.Serve(ln, srv, &web.FlagConfig{WebConfigFile: &path}, logger)
}

// oneLine joins the lines of a message, dropping their indentation: after a line ending in
// ":" with a space, else with "; ".
func oneLine(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if i > 0 {
			if strings.HasSuffix(b.String(), ":") {
				b.WriteString(" ")
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(strings.TrimSpace(l))
	}
	return b.String()
}
