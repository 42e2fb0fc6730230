// qnbd-img: a qemu-img subset (create, info, check, map, convert, compare, resize, bitmap, ...) with
// qemu-img 7.2's flags, output and exit codes, over qnbd's own qcow2 engine.
package main

import (
	"io"
	"os"
	"path/filepath"

	"github.com/qnbd/qnbd/internal/getopt"
)

// version is qnbd-img's own version, set with -ldflags "-X main.version=..." as qnbd's is;
// empty means the build information's (see internal/buildinfo).
var version string

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// command is one subcommand: its name and handler. Handlers get argv with the subcommand name
// in argv[0], as qemu-img's do, and return the exit status.
type command struct {
	name string
	run  func(a *app, argv []string) int
}

var commands []command

func init() {
	commands = []command{
		{"amend", (*app).amend},
		{"bitmap", (*app).bitmap},
		{"check", (*app).check},
		{"commit", (*app).commit},
		{"compare", (*app).compare},
		{"convert", (*app).convert},
		{"create", (*app).create},
		{"info", (*app).info},
		{"map", (*app).mapCmd},
		{"measure", (*app).measure},
		{"rebase", (*app).rebase},
		{"resize", (*app).resize},
		{"snapshot", (*app).snapshot},
	}
}

// run is the whole program: argv as the process got it, output streams; it returns the exit
// status.
func run(argv []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr, prog: "qnbd-img"}
	if len(argv) > 0 && argv[0] != "" {
		a.prog = filepath.Base(argv[0])
	}
	if len(argv) < 2 {
		return a.usage("Not enough arguments")
	}
	// Global options: "+:hVT:" (stop at the first operand, the command name).
	g := getopt.New(argv, "+:hVT:", []getopt.Option{
		getopt.NoArg("help", 'h'),
		getopt.NoArg("version", 'V'),
		getopt.ReqArg("trace", 'T'),
	})
	for {
		c := g.Next()
		if c == getopt.End {
			break
		}
		switch c {
		case getopt.Missing:
			return a.usage("missing argument for option '%s'", g.Bad)
		case getopt.Unknown:
			return a.usage("unrecognized option '%s'", g.Bad)
		case 'h':
			a.help()
			return 0
		case 'V':
			a.printVersion()
			return 0
		case 'T':
			// Tracing is QEMU's; accepted for compatibility and ignored.
		}
	}
	rest := g.Operands()
	if len(rest) < 1 {
		return 0
	}
	for _, c := range commands {
		if c.name == rest[0] {
			return c.run(a, rest)
		}
	}
	return a.usage("Command not found: %s", rest[0])
}
