// Package memstore is an in-memory, sparse qcow2.Storage for tests: it records writes and
// syncs so that a test can build every state a crash could leave behind, and it fails chosen
// operations on request.
//
// # Model
//
// A Store holds three views of one file:
//
//	durable   the contents as of the last Sync: what survives any crash
//	pending   the operations (WriteAt, Truncate, PunchHole) since that Sync, in order
//	current   durable with pending applied: what ReadAt and Size see
//
// Sync moves pending into durable. CrashClone builds a new Store from durable plus a random
// subset of pending (each operation kept or dropped, a kept write optionally torn at 512-byte
// sector granularity), which is what a power failure may leave on a disk with a volatile
// write cache. After StartLog, every mutation and Sync is also appended to a log, and CrashAt
// rebuilds the state a crash after any prefix of the log may leave: the tool for enumerating
// crash points (docs/test-plan.md, crash enumeration).
//
// Contents are kept in 4 KiB pages in a map, so a multi-GiB virtual disk with a few written
// clusters costs a few pages. Never-written ranges read as zeros.
//
// # Faults
//
// Inject installs an Injector consulted before every ReadAt, WriteAt, Sync, Truncate and
// PunchHole; a non-nil error fails the call, which then has no effect. Rule is the common
// injector: fail the n-th matching operation, once or from then on (pebble's errorfs does the
// same for files).
//
// # Concurrency
//
// All methods are safe for concurrent use; one mutex serialises them. Clones behave as deep
// copies: they share pages with their source copy-on-write, and neither ever changes a shared
// page in place, so cloning costs a map copy rather than a copy of the contents.
//
// memstore does not import qcow2 (qcow2's own tests import memstore); *Store nevertheless
// implements qcow2.Storage and qcow2.HolePuncher, which memstore's tests assert.
package memstore
