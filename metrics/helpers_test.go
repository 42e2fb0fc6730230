// Test helpers: flattening a registry into series values and diffing two snapshots.
package metrics

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// snapshot maps every qnbd_ sample (as name{label="value",...}, labels sorted) to its value.
// Histograms contribute their _bucket, _sum and _count samples.
type snapshot map[string]float64

func seriesKey(name string, labels []*dto.LabelPair, extra ...string) string {
	parts := make([]string, 0, len(labels)+1)
	for _, l := range labels {
		parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	parts = append(parts, extra...)
	sort.Strings(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

func takeSnapshot(t testing.TB, g prometheus.Gatherer) snapshot {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	s := snapshot{}
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "qnbd_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s[seriesKey(name, m.GetLabel())] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s[seriesKey(name, m.GetLabel())] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				s[seriesKey(name+"_count", m.GetLabel())] = float64(h.GetSampleCount())
				s[seriesKey(name+"_sum", m.GetLabel())] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					le := fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound()))
					s[seriesKey(name+"_bucket", m.GetLabel(), le)] = float64(b.GetCumulativeCount())
				}
			default:
				t.Fatalf("%s: unexpected type %v", name, mf.GetType())
			}
		}
	}
	return s
}

// diff returns after-before for every series that changed.
func diff(before, after snapshot) snapshot {
	d := snapshot{}
	for k, v := range after {
		if dv := v - before[k]; dv != 0 {
			d[k] = dv
		}
	}
	for k, v := range before {
		if _, ok := after[k]; !ok {
			d[k+" (vanished)"] = -v
		}
	}
	return d
}

// key builds a series key from a name and label pairs given as "name", "value", ...
func key(name string, lv ...string) string {
	pairs := make([]*dto.LabelPair, 0, len(lv)/2)
	for i := 0; i+1 < len(lv); i += 2 {
		pairs = append(pairs, &dto.LabelPair{Name: &lv[i], Value: &lv[i+1]})
	}
	return seriesKey(name, pairs)
}

// observed adds to want the changes one histogram observation of v makes.
func observed(want snapshot, name string, v float64, lv ...string) {
	want[key(name+"_count", lv...)]++
	if v != 0 {
		want[key(name+"_sum", lv...)] += v
	}
	for _, ub := range latencyBuckets {
		if v <= ub {
			want[key(name+"_bucket", append(lv, "le", fmt.Sprint(ub))...)]++
		}
	}
}

func equalSnapshots(a, b snapshot) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || math.Abs(v-w) > 1e-9*math.Max(1, math.Abs(w)) {
			return false
		}
	}
	return true
}

func (s snapshot) String() string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s %g\n", k, s[k])
	}
	return b.String()
}
