// Package loopport hands tests a loopback TCP port for a server they are about to start.
//
// A port taken from the kernel with a listen on ":0" and closed again is an ephemeral port:
// the kernel also hands those out as the local end of outgoing connections, so under load
// another test's client can take it before the server binds it, and the server then fails
// with "Address already in use". Ports from Free lie below the ephemeral range, where the
// kernel never picks on its own; only another test can take one, and a bind check just
// before returning makes that rare. Servers started by tests should still retry with a new
// port when they fail to bind (see docs/test-plan.md, "Ports"). A port handed out is also
// locked, through an empty file per port in $TMPDIR/qnbd-loopport, until the process exits,
// so that test packages running side by side are never handed the same port.
package loopport
