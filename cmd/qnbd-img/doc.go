// Command qnbd-img is qnbd's disk image tool: the subset of qemu-img that a qemu-nbd user
// needs next to a server (create, info, check, map, convert, compare, resize, and for
// external chains commit, rebase, measure and amend; docs/chains.md), with
// qemu-img 7.2's flags, output and exit codes, so that scripts written for qemu-img run
// unchanged.
//
// # Fidelity
//
// Option parsing is GNU getopt_long's (internal/getopt: permutation, clustered flags,
// abbreviated long options); sizes are parsed by QEMU's rules (strtosz.go); -o lists by QemuOpts' (qopts.go);
// JSON is printed with QEMU's QDict key order and layout (qjson.go), so output is byte for
// byte what qemu-img prints for the same image. The tests run qemu-img next to this command
// on the same files and compare. Known differences, each deliberate or owed to the engine:
//
//   - only raw and qcow2; other formats, --object, --image-opts, convert -c/-B/-l/-r,
//     --salvage and --bitmaps are refused with one clear line and exit status 1;
//   - -o help lists only the options implemented;
//   - a format guessed as raw never gets a qcow2 header written into its first sector, and
//     convert -n without -O refuses to overwrite a qcow2 target as raw (qemu-img would);
//     no probing warning is printed;
//   - "Detected format of X." ends with a newline; getopt errors name the offending argument
//     rather than the one before it;
//   - image locks (lock.go, internal/imagelock) are qemu-img's, byte for byte, except that
//     check locks only the image file (the one file it reads and repairs), where qemu-img
//     also locks the backing chain and the data file;
//   - commit -r is checked but not applied, and an emptied top keeps its file size; amend
//     compat=0.10 never zeroes a preallocated zero cluster that another L2 table shares
//     (qemu-img does, and loses snapshot data), and a refcount width change lays out its
//     new structures past the end of the file (docs/chains.md).
//
// # Structure
//
// main.go dispatches; each subcommand has its file; images are opened through
// internal/imgfmt, which hides the formats behind one Disk interface. Everything runs in the
// calling goroutine except convert's copy (copy.go): one goroutine walks the sources' block
// status and hands 2 MiB pieces to -m workers (default 8), which read, drop zeros and write;
// writes to qcow2 go out in order unless -W.
package main
