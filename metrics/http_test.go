// Tests of the HTTP endpoints and of Serve's lifecycle.
package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func get(t *testing.T, method, url string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header
}

func TestHandlerEndpoints(t *testing.T) {
	f := newFixture(t)
	var notReady atomic.Pointer[error]
	e := errors.New("export disk not open")
	notReady.Store(&e)
	ts := httptest.NewServer(f.m.Handler(func() error {
		if p := notReady.Load(); p != nil {
			return *p
		}
		return nil
	}))
	defer ts.Close()

	if code, body, _ := get(t, "GET", ts.URL+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body, _ := get(t, "GET", ts.URL+"/readyz"); code != 503 || !strings.Contains(body, "export disk not open") {
		t.Errorf("/readyz before ready = %d %q, want 503 with the reason", code, body)
	}
	notReady.Store(nil)
	if code, body, _ := get(t, "GET", ts.URL+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz when ready = %d %q", code, body)
	}
	if code, _, _ := get(t, "HEAD", ts.URL+"/healthz"); code != 200 {
		t.Errorf("HEAD /healthz = %d", code)
	}
	code, body, hdr := get(t, "GET", ts.URL+"/metrics")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Errorf("/metrics = %d %q", code, hdr.Get("Content-Type"))
	}
	for _, want := range []string{`qnbd_nbd_connections{export="a"} 0`, `qnbd_build_info{`, "go_goroutines ", "process_start_time_seconds "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _, _ := get(t, "POST", ts.URL+"/metrics"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics = %d, want 405", code)
	}
	if code, _, _ := get(t, "GET", ts.URL+"/nope"); code != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", code)
	}
	if code, _, _ := get(t, "GET", ts.URL+"/"); code != 200 {
		t.Errorf("GET / = %d, want 200", code)
	}
}

func TestHandlerNilReadyMeansReady(t *testing.T) {
	ts := httptest.NewServer(New(Options{}).Handler(nil))
	defer ts.Close()
	if code, _, _ := get(t, "GET", ts.URL+"/readyz"); code != 200 {
		t.Errorf("/readyz with nil ReadyFunc = %d, want 200", code)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	m := New(Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ServeListener(ctx, ln, nil) }()
	if code, _, _ := get(t, "GET", "http://"+ln.Addr().String()+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeListener after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeListener did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepting after ServeListener returned")
	}
}

func TestServeReportsBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := New(Options{}).Serve(ctx, busy.Addr().String(), nil); err == nil || ctx.Err() != nil {
		t.Errorf("Serve on a busy port = %v, want a listen error at once", err)
	}
}

func TestServeAddr(t *testing.T) {
	// Find a free loopback port, release it, and serve on it by address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(Options{}).Serve(ctx, addr, nil) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Serve(%s) never answered: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve after cancel = %v", err)
	}
}
