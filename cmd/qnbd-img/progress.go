// -p progress output, as QEMU's qemu-progress.c prints it.
package main

import (
	"fmt"
	"io"
	"sync"
)

// progress prints "    (NN.NN/100%)\r" whenever the percentage moved by more than minSkip
// (and at 0 and 100), and a newline at the end. All arithmetic is in float32, like QEMU's.
type progress struct {
	mu        sync.Mutex
	w         io.Writer
	enabled   bool
	minSkip   float32
	current   float32
	lastPrint float32
}

func newProgress(w io.Writer, enabled bool, minSkip float32) *progress {
	return &progress{w: w, enabled: enabled, minSkip: minSkip}
}

// print is qemu_progress_print: with max 0 delta is the new absolute value, otherwise the
// value grows by delta percent of max.
func (p *progress) print(delta float32, max int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := delta
	if max != 0 {
		cur = p.current + delta/100*float32(max)
	}
	if cur > 100 {
		cur = 100
	}
	p.current = cur
	if cur > p.lastPrint+p.minSkip || cur < p.lastPrint-p.minSkip || cur == 0 || cur == 100 {
		p.lastPrint = cur
		if p.enabled {
			fmt.Fprintf(p.w, "    (%3.2f/100%%)\r", cur)
		}
	}
}

// end is qemu_progress_end.
func (p *progress) end() {
	if p.enabled {
		fmt.Fprint(p.w, "\n")
	}
}
