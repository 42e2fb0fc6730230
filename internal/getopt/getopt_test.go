// The parser against glibc itself: util-linux getopt(1) runs glibc's getopt_long on the same
// table and argv, so its output and its first error line are the oracle.
package getopt

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// qemuNBDShort and qemuNBDLong are qemu-nbd 7.2's tables (qemu-nbd.c), with which glibc's
// messages were measured; a trailing ':' marks a required argument.
const qemuNBDShort = "hVb:o:p:rsnc:dvk:e:f:tl:x:T:D:AB:L"

var qemuNBDLong = strings.Fields("help version bind: port: socket: offset: read-only " +
	"allocation-depth bitmap: connect: disconnect list snapshot load-snapshot: nocache cache: " +
	"aio: discard: detect-zeroes: shared: format: persistent verbose object: export-name: " +
	"description: tls-creds: tls-hostname: tls-authz: image-opts trace: fork pid-file: selinux-label:")

// table turns "name" / "name:" into Options numbered from 256.
func table(names []string) []Option {
	var t []Option
	for i, n := range names {
		name, arg := strings.CutSuffix(n, ":")
		k := NoArgument
		if arg {
			k = RequiredArgument
		}
		t = append(t, Option{Name: name, Arg: k, Val: rune(256 + i)})
	}
	return t
}

// render prints what Next returns the way getopt(1) prints it, or the first error.
func render(argv []string, short string, long []Option) (out string, err string) {
	p := New(append([]string{"prog"}, argv...), short, long)
	var b strings.Builder
	for {
		c := p.Next()
		switch c {
		case End:
			b.WriteString(" --")
			for _, o := range p.Operands() {
				fmt.Fprintf(&b, " '%s'", o)
			}
			return b.String(), ""
		case Unknown, Missing:
			if p.Err() == nil {
				return "", "no message"
			}
			return "", p.Err().Error()
		}
		if c >= 256 {
			fmt.Fprintf(&b, " --%s", name(long, c))
		} else {
			fmt.Fprintf(&b, " -%c", c)
		}
		if p.Arg != "" || strings.Contains(short, string(c)+":") || c >= 256 && find(long, c).Arg == RequiredArgument {
			fmt.Fprintf(&b, " '%s'", p.Arg)
		}
	}
}

// glibc runs util-linux getopt(1) and returns its output and its first error line.
func glibc(t *testing.T, argv []string, short string, names []string) (out string, err string) {
	t.Helper()
	args := append([]string{"-o", short, "-l", strings.Join(names, ","), "--"}, argv...)
	cmd := exec.Command("getopt", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, _ := cmd.Output()
	if e := stderr.String(); e != "" {
		first, _, _ := strings.Cut(e, "\n")
		return "", strings.TrimPrefix(first, "getopt: ")
	}
	return strings.TrimSuffix(string(stdout), "\n"), ""
}

func TestParsesAsGlibcGetoptLong(t *testing.T) {
	long := table(qemuNBDLong)
	for _, args := range []string{
		"img", "-rt img", "-p10809 -p 123", "-tp 7 f", "--port=1 --port 2", "--port -5",
		"img -r -- -x", "-", "--pers --read", "--export-n x", "--e x", "--ex x",
		"a -r b -t -- c -d", "a b -rt c", "--port=", "-- -r", "--",
		"--de x", "--d", "--t", "--tls x", "--f=x", "--c x", "--=x",
		"-q", "-rz", "-r-", "-:", "-+", "--frobnicate", "--bogus=1",
		"-p", "x -p", "--port", "--po", "--read-only=yes", "--he=1", "--ima=1",
	} {
		argv := strings.Fields(args)
		wantOut, wantErr := glibc(t, argv, qemuNBDShort, qemuNBDLong)
		gotOut, gotErr := render(argv, qemuNBDShort, long)
		if gotOut != wantOut || gotErr != wantErr {
			t.Errorf("%q: got %q / error %q, glibc %q / error %q", args, gotOut, gotErr, wantOut, wantErr)
		}
	}
}

func TestRequireOrderStopsAtFirstOperand(t *testing.T) {
	long := table(qemuNBDLong)
	for _, short := range []string{"+" + qemuNBDShort} {
		for _, args := range []string{"x -r", "-r x -t", "-r -- -t"} {
			argv := strings.Fields(args)
			wantOut, wantErr := glibc(t, argv, short, qemuNBDLong)
			gotOut, gotErr := render(argv, short, long)
			if gotOut != wantOut || gotErr != wantErr {
				t.Errorf("%s %q: got %q/%q, glibc %q/%q", short, args, gotOut, gotErr, wantOut, wantErr)
			}
		}
	}
	t.Setenv("POSIXLY_CORRECT", "1")
	if got, _ := render([]string{"x", "-r"}, qemuNBDShort, long); got != " -- 'x' '-r'" {
		t.Errorf("POSIXLY_CORRECT: %q, want the options to stop at x", got)
	}
}

func TestAbbreviationAmbiguousOnlyWhenMatchesDiffer(t *testing.T) {
	// Two entries for one option (same argument kind and value) are one possibility.
	long := []Option{NoArg("verbose", 'v'), NoArg("verbosity", 'v'), NoArg("version", 'V')}
	if got, err := render([]string{"--verbo"}, "vV", long); err != "" || got != " -v --" {
		t.Errorf("--verbo: %q %q, want -v", got, err)
	}
	_, err := render([]string{"--ver"}, "vV", long)
	if want := "option '--ver' is ambiguous; possibilities: '--verbose' '--version'"; err != want {
		t.Errorf("--ver: %q, want %q", err, want)
	}
}

func TestQuietStringReportsMissingAndBadElement(t *testing.T) {
	long := []Option{ReqArg("format", 'f'), NoArg("force-share", 'U')}
	for _, tc := range []struct{ args, want string }{
		{"info -f", "missing -f"},
		{"info x -f", "missing -f"},
		{"info --format", "missing --format"},
		{"info -Uz", "unknown -Uz"},
		{"info -zU x", "unknown info"}, // glibc's optind-1 is still the element before
		{"info x -zU", "unknown x"},    // x was permuted in front
		{"info --f=x", "unknown --f=x"},
	} {
		p := New(strings.Fields(tc.args), ":f:U", long)
		var got string
		for got == "" {
			switch p.Next() {
			case End:
				got = "end"
			case Missing:
				got = "missing " + p.Bad
			case Unknown:
				got = "unknown " + p.Bad
			}
		}
		if got != tc.want {
			t.Errorf("%q: %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestExtraOptionsLeaveOriginalAbbreviationsAlone(t *testing.T) {
	long := table(qemuNBDLong)
	for i, n := range []string{"handshake-limit:", "export:", "force-share", "log-level:"} {
		name, arg := strings.CutSuffix(n, ":")
		k := NoArgument
		if arg {
			k = RequiredArgument
		}
		long = append(long, Option{Name: name, Arg: k, Val: rune(1000 + i), Extra: true})
	}
	for _, tc := range []struct{ args, out, err string }{
		{"--h", " --help --", ""},                     // not ambiguous with --handshake-limit
		{"--e x", " --export-name 'x' --", ""},        // nor --export-name with --export
		{"--export x", " --export 'x' --", ""},        // an exact name still wins
		{"--hand 5", " --handshake-limit '5' --", ""}, // an abbreviation of an extra alone
		{"--fo", "", "option '--fo' is ambiguous; possibilities: '--format' '--fork'"},
		{"--log-l x", " --log-level 'x' --", ""},
	} {
		out, err := render(strings.Fields(tc.args), qemuNBDShort, long)
		if out != tc.out || err != tc.err {
			t.Errorf("%q: %q/%q, want %q/%q", tc.args, out, err, tc.out, tc.err)
		}
	}
}

func find(long []Option, val rune) Option {
	for _, o := range long {
		if o.Val == val {
			return o
		}
	}
	panic("no option with that value")
}

func name(long []Option, val rune) string { return find(long, val).Name }
