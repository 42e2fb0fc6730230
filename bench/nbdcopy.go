// Running the backup path: a whole-disk nbdcopy to null:.
package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// copyURI is the NBD URI nbdcopy reads: nbd+unix:// on sock, or nbds+unix:// with the
// client's x509 files in clientDir (libnbd wants ca-cert.pem, client-cert.pem and
// client-key.pem there).
func copyURI(sock, clientDir string) string {
	q := url.Values{"socket": {sock}}
	scheme := "nbd+unix"
	if clientDir != "" {
		scheme = "nbds+unix"
		q.Set("tls-certificates", clientDir)
	}
	return scheme + ":///?" + q.Encode()
}

// runCopy copies the whole export at uri to null: with nbdcopy over conns connections,
// passes times in a row, and measures each pass's wall time. size is the export's size:
// nbdcopy reads every byte of a fully allocated image once per pass. Everything else is left
// at nbdcopy's defaults. The throughput reported is the median pass's, which a burst of other
// work on a shared machine moves less than a mean; the byte count and the CPU times cover
// all passes.
func runCopy(ctx context.Context, uri string, conns, passes int, size int64) (measurement, error) {
	args := []string{"--connections=" + strconv.Itoa(conns), uri, "null:"}
	var m measurement
	var client cpuTime
	for range passes {
		cmd := exec.CommandContext(ctx, "nbdcopy", args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		t0 := time.Now()
		err := cmd.Run()
		elapsed := time.Since(t0)
		if err != nil {
			return measurement{}, fmt.Errorf("nbdcopy %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
		}
		client += cpuTime(cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime())
		m.PassMiBps = append(m.PassMiBps, float64(size)/(1<<20)/elapsed.Seconds())
		m.Bytes += size
	}
	m.MiBps = median(m.PassMiBps)
	m.ClientCPUPerGiB = perGiB(client, m.Bytes)
	return m, nil
}

// median of a non-empty list; the mean of the middle two for an even count.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
