// Package syncbuf provides Buffer, a bytes.Buffer that one goroutine may write while another
// reads it: the output of a subprocess or a logger, collected by a test that prints it on
// failure while the writer may still run.
//
//	out := &syncbuf.Buffer{}
//	cmd.Stdout, cmd.Stderr = out, out
//	...
//	t.Logf("server output:\n%s", out)
//
// # Concurrency
//
// Every method of a Buffer takes its one mutex; a Buffer must not be copied after first use.
package syncbuf
