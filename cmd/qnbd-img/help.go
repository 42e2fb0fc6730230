// --help and --version texts.
package main

import (
	"fmt"

	"github.com/qnbd/qnbd/internal/buildinfo"
)

const helpText = `usage: %[1]s [standard options] command [command options]
qnbd-img: the disk image tool of qnbd, a subset of qemu-img with the same
flags, output and exit codes

    '-h', '--help'       display this help and exit
    '-V', '--version'    output version information and exit

Command syntax:
  amend [-p] [-q] [-f fmt] [-t cache] -o options filename
  bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [-f fmt] filename bitmap
  check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename
  commit [-q] [-f fmt] [-t cache] [-b base] [-d] [-p] [-r rate] filename
  compare [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2
  convert [--bitmaps [--skip-broken-bitmaps]] [-U] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-o options] [-S sparse_size] [-m num_workers] [-W] [--target-is-zero] filename [filename2 [...]] output_filename
  create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
  info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
  map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename
  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] [-U] filename]
  rebase [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] [-U] -b backing_file [-F backing_fmt] filename
  resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size
  snapshot [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename

Command parameters:
  'filename' is a disk image filename
  'fmt' is the disk image format: raw or qcow2. It is guessed automatically
    when not given: a file starting with the qcow2 magic is qcow2, anything
    else is raw (a guessed raw image may not be given a qcow2 header by a write)
  'cache' is the cache mode used to write the output disk image, the valid
    options are: 'none', 'writeback' (default, except for convert), 'writethrough',
    'directsync' and 'unsafe' (default for convert); accepted for compatibility
  'size' is the disk image size in bytes. Optional suffixes
    'k' or 'K' (kilobyte, 1024), 'M' (megabyte, 1024k), 'G' (gigabyte, 1024M),
    'T' (terabyte, 1024G), 'P' (petabyte, 1024T) and 'E' (exabyte, 1024P)  are
    supported. 'b' is ignored.
  'output_filename' is the destination disk image filename
  'output_fmt' is the destination format
  'options' is a comma separated list of format specific options in a
    name=value format. Use -o ? for an overview of the options supported by the
    used format
  '-u' allows creating an image without opening its backing file
  '-h' with or without a command shows this help
  '-p' show progress of command (only certain commands)
  '-q' use Quiet mode - do not print any output (except errors)
  '-S' indicates the consecutive number of bytes (defaults to 4k) that must
       contain only zeros for the output to be left sparse during
       conversion. If the number of bytes is 0, the source will not be scanned for
       unallocated or zero sectors, and the destination image will always be
       fully allocated
  '--output' takes the format in which the output must be done (human or json)
  '-n' skips the target volume creation (useful if the volume is created
       prior to running the conversion)
  '-U' (--force-share) locks images without refusing other writers, to read an
       image another process writes; read-only commands only (images are locked
       as qemu-img locks them)

Parameters to check subcommand:
  '-r' tries to repair any inconsistencies that are found during the check.
       '-r leaks' repairs only cluster leaks, whereas '-r all' fixes all
       kinds of errors, with a higher risk of choosing the wrong fix or
       hiding corruption that has already occurred.

Parameters to convert subcommand:
  '-m' specifies how many workers copy in parallel (defaults to 8)
  '-W' allow to write to the target out of order (always the case here)

Parameters to commit subcommand:
  '-b' is the base image of the chain to commit into; it implies '-d'
  '-d' keeps the image's data after committing it (otherwise it is emptied)
  '-r' rate limit, checked as qemu-img checks it; the copy is not throttled

Parameters to rebase subcommand:
  '-u' rewrites the backing file name only (unsafe); without it, what would read
       differently through the new backing file is first copied into the image
  '-F' the new backing file's format, required to change the backing file

Parameters to amend subcommand:
  '-o' compat=0.10|1.1, lazy_refcounts=on|off and size; refcount_bits changes
       are refused

Parameters to compare subcommand:
  '-f' first image format
  '-F' second image format
  '-s' run in Strict mode - fail on different image size or sector allocation

Not supported (refused with an error): --object, --image-opts,
--target-image-opts, -B, -l, -C, --salvage.

Supported formats: qcow2 raw
`

// qemuVersion is the qemu-img release whose interface qnbd-img implements.
const qemuVersion = "7.2.0"

// versionLine is the first line of --version and --help. Called under its own name it gives
// qnbd-img's version; installed as another name (a "qemu-img" symlink, to drop it in) it
// leads with the qemu-img version it behaves as, so that scripts checking
// "qemu-img version X.Y" see the interface they get.
func (a *app) versionLine() string {
	if a.prog == "qnbd-img" {
		return fmt.Sprintf("qnbd-img version %s (qemu-img %s compatible subset)", buildinfo.Version(version), qemuVersion)
	}
	return fmt.Sprintf("%s version %s (qnbd-img %s, a qemu-img compatible subset)", a.prog, qemuVersion, buildinfo.Version(version))
}

// help prints the help text on stdout (qemu-img's help() exits 0).
func (a *app) help() {
	fmt.Fprintln(a.stdout, a.versionLine())
	fmt.Fprintf(a.stdout, helpText, a.prog)
}

// printVersion prints the version, two lines like qemu-img's.
func (a *app) printVersion() {
	fmt.Fprintf(a.stdout, "%s\nCopyright (c) the qnbd authors\n", a.versionLine())
}
