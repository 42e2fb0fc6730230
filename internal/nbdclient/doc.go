// Package nbdclient is the client side of the NBD handshake that qnbd needs for
// qemu-nbd's -L/--list: it lists a server's exports with what qemu-nbd's client learns of
// each (description, size, transmission flags, block sizes, metadata contexts), sending the
// options in the order qemu-nbd 7.2 sends them (docs/qemu-nbd-fidelity.md). The wire
// constants are the server package's.
//
// # Contract
//
// List(conn, opts) runs one fixed-newstyle handshake on conn and never enters transmission:
// it starts TLS first when opts.TLS is set (NBD_OPT_STARTTLS), asks for structured replies, sends NBD_OPT_LIST, then for each export NBD_OPT_INFO (with
// NBD_INFO_BLOCK_SIZE) and, with structured replies, NBD_OPT_LIST_META_CONTEXT (all
// contexts, then "qemu:" when none of those was a qemu: one, as QEMU works around old
// servers), and ends with NBD_OPT_ABORT. An export whose INFO fails stops the INFO queries
// (its entry and the later ones keep only name and description), as in QEMU. Every length
// the server sends is bounded before anything is allocated; a malformed reply is an error.
//
// # Concurrency
//
// List uses conn alone and keeps no state; the caller sets deadlines on conn.
package nbdclient
