// A small PromQL scanner that finds the metric and label names an expression uses. Syntax is
// checked by promtool elsewhere; this only has to find names in valid expressions.
package deploy

import (
	"fmt"
	"reflect"
	"sort"
	"testing"
)

// Words that are PromQL syntax, not metric names, when they are not followed by "(".
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
	// Aggregation operators, which may be followed by a grouping clause before "(".
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
}

// Keywords followed by a parenthesised list of label names.
var labelListKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdent(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// skipString returns the index after the quoted string starting at i.
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		if s[j] == '\\' && q != '`' {
			j++
			continue
		}
		if s[j] == q {
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at %d", i)
}

// promqlNames returns the metric names and the label names (in matchers and grouping
// clauses) of expr, each sorted and de-duplicated.
func promqlNames(expr string) (names, labels []string, err error) {
	nameSet, labelSet := map[string]bool{}, map[string]bool{}
	s := expr
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case isSpace(c):
			i++
		case c == '#': // comment to end of line
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			if i, err = skipString(s, i); err != nil {
				return nil, nil, err
			}
		case c == '{': // label matchers: name op "value", ...
			i++
			for {
				for i < len(s) && (isSpace(s[i]) || s[i] == ',') {
					i++
				}
				if i >= len(s) {
					return nil, nil, fmt.Errorf("unterminated {")
				}
				if s[i] == '}' {
					i++
					break
				}
				j := i
				for j < len(s) && isIdent(s[j]) {
					j++
				}
				if j == i {
					return nil, nil, fmt.Errorf("bad label matcher at %d", i)
				}
				labelSet[s[i:j]] = true
				for j < len(s) && (isSpace(s[j]) || s[j] == '=' || s[j] == '!' || s[j] == '~') {
					j++
				}
				if j >= len(s) || (s[j] != '"' && s[j] != '\'' && s[j] != '`') {
					return nil, nil, fmt.Errorf("label matcher without a string value at %d", j)
				}
				if i, err = skipString(s, j); err != nil {
					return nil, nil, err
				}
			}
		case c == '[': // range or subquery durations
			for i < len(s) && s[i] != ']' {
				i++
			}
			i++
		case c >= '0' && c <= '9' || (c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9'):
			// numbers and durations (0.99, 1e3, 0x1f, 5m)
			for i < len(s) && (isIdent(s[i]) || s[i] == '.' ||
				((s[i] == '+' || s[i] == '-') && (s[i-1] == 'e' || s[i-1] == 'E'))) {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			word := s[i:j]
			k := j
			for k < len(s) && isSpace(s[k]) {
				k++
			}
			switch {
			case labelListKeywords[word] && k < len(s) && s[k] == '(':
				end := k + 1
				for end < len(s) && s[end] != ')' {
					end++
				}
				if end >= len(s) {
					return nil, nil, fmt.Errorf("unterminated %s (", word)
				}
				for _, l := range splitLabels(s[k+1 : end]) {
					labelSet[l] = true
				}
				i = end + 1
				continue
			case k < len(s) && s[k] == '(': // function or aggregation
			case promqlKeywords[word]:
			default:
				nameSet[word] = true
			}
			i = j
		default:
			i++ // operators, parentheses, commas
		}
	}
	return sortedKeys(nameSet), sortedKeys(labelSet), nil
}

func splitLabels(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		if !isIdentStart(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isIdent(s[j]) {
			j++
		}
		out = append(out, s[i:j])
		i = j
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestPromqlNames(t *testing.T) {
	cases := []struct {
		expr           string
		names, labels  []string
		wantErrPresent bool
	}{
		{`up{job="qnbd"} == 0`, []string{"up"}, []string{"job"}, false},
		{`histogram_quantile(0.99, sum by (op, le) (rate(a_bucket{x=~"r|w", y!="}"}[5m]))) > 0.5`,
			[]string{"a_bucket"}, []string{"le", "op", "x", "y"}, false},
		{`sum(rate(b_total[1h] offset 5m)) without (instance) / on(job) group_left c`,
			[]string{"b_total", "c"}, []string{"instance", "job"}, false},
		{`1e3 * d and bool_thing or 0x1f`, []string{"bool_thing", "d"}, nil, false},
		{`max by (export) (e) # comment with f_total`, []string{"e"}, []string{"export"}, false},
		{`g{h="unterminated}`, nil, nil, true},
	}
	for _, c := range cases {
		names, labels, err := promqlNames(c.expr)
		if (err != nil) != c.wantErrPresent {
			t.Errorf("%q: err = %v", c.expr, err)
			continue
		}
		if err != nil {
			continue
		}
		if c.labels == nil {
			c.labels = []string{}
		}
		if !reflect.DeepEqual(names, c.names) || !reflect.DeepEqual(labels, c.labels) {
			t.Errorf("%q: names %v labels %v, want %v %v", c.expr, names, labels, c.names, c.labels)
		}
	}
}
