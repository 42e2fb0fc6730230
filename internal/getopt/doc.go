// Package getopt parses command lines exactly as glibc's getopt_long does, for the two
// binaries whose command lines copy QEMU's (qnbd is qemu-nbd's, qnbd-img is qemu-img's):
// grouped short options ("-rt", "-p10809"), "--name=value" and "--name value", unique
// abbreviations of long names, operands anywhere (GNU permutation) unless the short-option
// string starts with '+' or POSIXLY_CORRECT is set, and "--" ending the options.
//
// # Contract
//
// New(argv, shortopts, long) walks argv; argv[0] is the program or subcommand name and is
// never parsed. shortopts is getopt's string: letters, a ':' after a letter that takes an
// argument, an optional leading '+' (stop at the first operand) and an optional leading ':'
// (the caller prints its own errors; a missing argument returns Missing, not Unknown).
//
// Next returns, in command-line order, each option's value (the short letter, or a long
// Option's Val) with its argument in Arg, then End. After End, Operands returns the operands in
// their original order. On a mistake Next returns Unknown or Missing; Bad is argv[optind-1]
// as glibc leaves it (the element at fault, or the one before it inside a cluster such as
// "-zU": qemu-img prints that one), and Err is the message glibc prints (without its "prog: "
// prefix) in glibc 2.36's words, which are what qemu-nbd 7.2 shows:
//
//	unrecognized option '--bogus=1'
//	invalid option -- 'z'
//	option requires an argument -- 'p'
//	option '--port' requires an argument
//	option '--help' doesn't allow an argument
//	option '--f' is ambiguous; possibilities: '--format' '--fork'
//
// An exact long name wins over abbreviations; an abbreviation is ambiguous only when the
// options it matches differ in argument kind or value, as in glibc; the possibilities are
// listed in the table's order. Options marked Extra (a program's additions to a table it
// copies) match an abbreviation only when none of the others does, so that "--h" stays
// "--help" beside an added "--handshake-limit"; an exact name matches either kind. Parsing
// after an error is not supported.
//
// A Parser is not safe for concurrent use. Like glibc, it reorders argv in place.
package getopt
